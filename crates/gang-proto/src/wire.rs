//! The wire: a request and a response line, the client, and the server
//! loop that answers each line of a connection (newline-delimited JSON,
//! lines at most [`MAX_LINE`] bytes).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::*;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// API version of the sender.
    pub version: u32,
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    /// What it asks.
    #[serde(flatten)]
    pub body: RequestBody,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// API version of the daemon.
    pub version: u32,
    /// The request's id (0 when the request was unreadable).
    pub id: u64,
    /// The answer.
    pub result: Result<ResponseBody, ApiError>,
}

/// Why a call failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to the gang daemon at {path} (is `gang daemon` running?)")]
    Connect {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("talking to the gang daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon closed the connection.
    #[error("the gang daemon closed the connection")]
    Closed,
    /// The daemon sent something unreadable.
    #[error("unreadable answer from the gang daemon: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Client::over(stream)
    }

    /// A client over an already connected stream.
    pub fn over(stream: UnixStream) -> Result<Client, ClientError> {
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            version: VERSION,
            id,
            body,
        };
        let mut line =
            serde_json::to_string(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if read_line_limited(&mut self.reader, &mut answer)? == 0 {
            return Err(ClientError::Closed);
        }
        let response: Response = serde_json::from_str(answer.trim_end())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if response.id != id {
            return Err(ClientError::Protocol(format!(
                "answer to request {} while waiting for {id}",
                response.id
            )));
        }
        Ok(response.result?)
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; returns its length (0 at end
/// of stream). A longer line is an error.
fn read_line_limited(reader: &mut impl BufRead, out: &mut String) -> std::io::Result<usize> {
    let n = std::io::Read::take(&mut *reader, MAX_LINE as u64 + 1).read_line(out)?;
    if n > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message longer than the limit",
        ));
    }
    Ok(n)
}

/// Parses one request line into the request, or the error to answer with.
pub fn parse_request(line: &str) -> Result<Request, (u64, ApiError)> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        (
            0,
            ApiError::new(ErrorCode::BadRequest, format!("not JSON: {e}")),
        )
    })?;
    let id = value
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err((
                id,
                ApiError::new(
                    ErrorCode::Version,
                    format!(
                        "the client speaks API version {v}, this daemon speaks version {VERSION}"
                    ),
                ),
            ))
        }
        None => {
            return Err((
                id,
                ApiError::new(ErrorCode::BadRequest, "the request has no API version"),
            ))
        }
    }
    serde_json::from_value(value).map_err(|e| {
        (
            id,
            ApiError::new(ErrorCode::BadRequest, format!("bad request: {e}")),
        )
    })
}

/// Serves one connection: reads requests until the client closes, answers
/// each with `handle`'s result. Returns when the client is gone.
pub fn serve(
    stream: UnixStream,
    mut handle: impl FnMut(RequestBody) -> Result<ResponseBody, ApiError>,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let (id, result) = match read_line_limited(&mut reader, &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => match parse_request(line.trim_end()) {
                Ok(request) => (request.id, handle(request.body)),
                Err((id, e)) => (id, Err(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                (0, Err(ApiError::new(ErrorCode::BadRequest, e.to_string())))
            }
            Err(e) => return Err(e),
        };
        let response = Response {
            version: VERSION,
            id,
            result,
        };
        let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
        text.push('\n');
        writer.write_all(text.as_bytes())?;
        if line.len() > MAX_LINE {
            return Ok(()); // the rest of an oversized line is not a request
        }
    }
}
