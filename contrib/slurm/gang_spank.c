/*
 * gang_spank: run Slurm job steps as gang domains.
 *
 * A SPANK plugin that adds `--gang=POLICY` to srun, sbatch and salloc. A step
 * started with it becomes, on every node it runs on, a `type = "process"`
 * domain of the node's gang daemon over the step's freezer cgroup: its local
 * tasks are co-scheduled on `vcpus = <local task count> x <CPUs per task>`
 * (srun -c) CPUs of a gang pool with gang_policy = POLICY. The domain is made
 * before any task runs its program and destroyed when the step ends (normally,
 * failing, or cancelled).
 *
 * Build (spank.h is in Debian's libslurm-dev):
 *   cc -shared -fPIC -Wall -o gang_spank.so contrib/slurm/gang_spank.c
 *
 * Load it with a line in plugstack.conf (slurm.conf's PlugStackConfig), the
 * same file on the submit hosts and the compute nodes:
 *   required /usr/local/lib/slurm/gang_spank.so gang=/usr/local/bin/gang pool=Gang
 *
 * Arguments (all optional):
 *   gang=PATH     the gang binary (default /usr/local/bin/gang)
 *   socket=PATH   the daemon's socket, given to gang as GANG_SOCKET
 *                 (default: gang's own default, /run/gang/gang.sock)
 *   pool=NAME     the gang pool the domains go to (default: gang's default pool)
 *   dir=PATH      where the domains' config files are written (default /run/gang/slurm)
 *   cluster=1     the pool is on a shared clock (cpupool-create ... clock=... base=...)
 *                 on every node: a tt step gets gang_group = "slurm-J.S", so that its
 *                 slot is at the same instants on every node (the daemon refuses
 *                 gang_group in a pool without a shared clock, hence the switch)
 *   timeout=S     seconds a `gang` command may take (default 30)
 *
 * POLICY is checked in srun/sbatch/salloc with gang's own syntax
 * (tt,PERIOD,ACTIVE[,exact][,sf][@FROM] | et,PERIOD,ACTIVE[,sf][@FROM] |
 * be,WEIGHT[,sf] | no[@FROM]; times as 10ms, 500us, 1.5ms, a bare number is ms):
 * a bad value stops the command before anything is submitted (exit 255).
 * Whether the pool has room can only be known on the node: there, if
 * `gang create` fails, nothing is made, gang's message is logged and shown on
 * the user's terminal, and every task of the step exits 1 before running its
 * program (so srun exits non-zero).
 *
 * Where (see contrib/slurm/NOTES.md): the domain is created in
 * slurm_spank_task_post_fork for the last local task (the step cgroup holds
 * every local task, none has run its program yet, and blocking there holds
 * them), destroyed in slurm_spank_exit in slurmstepd. The batch step (the
 * script that runs srun) and the extern step are skipped.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(gang_spank, 1);

/* slurm.h's special step ids (not included: spank.h is enough) */
#define GS_BATCH_SCRIPT 0xfffffffbu
#define GS_EXTERN_CONT 0xfffffffcu
#define GS_INTERACTIVE_STEP 0xfffffffau
#define GS_PENDING_STEP 0xfffffffdu

static const char *gang_bin = "/usr/local/bin/gang";
static const char *gang_socket = NULL;
static const char *gang_pool = NULL;
static const char *conf_dir = "/run/gang/slurm";
static int cluster;
static unsigned timeout_s = 30;

static char policy[256];
static int policy_set;
static char name[64];   /* slurm-J.S, set when this slurmstepd made (or tried) a domain */
static int tried;

/* ---- the policy syntax, as gang-core's Policy::from_str ---- */

/* crate::time::parse_duration: digits with at most one '.', then an optional
 * unit (ns us µs ms s sec m min h; none = ms), a whole number of ns */
static int parse_duration(const char *s, size_t n, uint64_t *out)
{
	static const struct { const char *u; uint64_t scale; } units[] = {
		{"", 1000000ull}, {"ns", 1ull}, {"us", 1000ull}, {"\xc2\xb5s", 1000ull},
		{"ms", 1000000ull}, {"s", 1000000000ull}, {"sec", 1000000000ull},
		{"m", 60000000000ull}, {"min", 60000000000ull}, {"h", 3600000000000ull},
	};
	char buf[64], num[64], unit[16];
	size_t i, k, dots = 0;
	uint64_t scale = 0, total;
	unsigned __int128 ip = 0;

	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	for (i = 0; buf[i] && ((buf[i] >= '0' && buf[i] <= '9') || buf[i] == '.'); i++)
		dots += buf[i] == '.';
	if (i == 0 || dots > 1 || strlen(buf + i) >= sizeof(unit))
		return -1;
	memcpy(num, buf, i);
	num[i] = '\0';
	snprintf(unit, sizeof(unit), "%s", buf + i);
	/* the unit, trimmed */
	{
		char *u = unit;
		size_t l;
		while (*u == ' ')
			u++;
		l = strlen(u);
		while (l && u[l - 1] == ' ')
			u[--l] = '\0';
		memmove(unit, u, l + 1);
	}
	for (k = 0; k < sizeof(units) / sizeof(units[0]); k++)
		if (strcmp(unit, units[k].u) == 0)
			scale = units[k].scale;
	if (scale == 0)
		return -1;
	{
		/* in 128 bits, as gang does, then it must fit in 64 */
		char *dot = strchr(num, '.');
		const char *frac = dot ? dot + 1 : "";
		unsigned __int128 t;
		if (dot)
			*dot = '\0';
		for (const char *p = num; *p; p++) {
			ip = ip * 10 + (uint64_t)(*p - '0');
			if (ip > UINT64_MAX) /* times a scale >= 1: out of range */
				return -1;
		}
		t = ip * scale;
		if (*frac) {
			/* frac * scale must be a multiple of 10^digits */
			size_t digits = strlen(frac);
			unsigned __int128 f = 0, denom = 1, scaled;
			if (digits > 38) /* 10^digits in 128 bits */
				return -1;
			for (const char *p = frac; *p; p++) {
				f = f * 10 + (unsigned)(*p - '0');
				denom *= 10;
			}
			if (f > ~(unsigned __int128)0 / scale)
				return -1;
			scaled = f * scale;
			if (scaled % denom)
				return -1;
			t += scaled / denom;
		}
		if (t > UINT64_MAX)
			return -1;
		total = (uint64_t)t;
	}
	if (out)
		*out = total;
	return 0;
}

/* Checks POLICY; 0 if gang accepts it, else -1 with why in err. Sets *tt for a
 * time-triggered one. */
static int check_policy(const char *p, int *tt, char *err, size_t errn)
{
	char body[256];
	const char *at, *fields[8];
	size_t lens[8];
	int nf = 0;
	uint64_t from = 0, v;

	*tt = 0;
	if (!p || !*p) {
		snprintf(err, errn, "empty");
		return -1;
	}
	if (strlen(p) >= sizeof(body)) {
		snprintf(err, errn, "too long");
		return -1;
	}
	at = strrchr(p, '@');
	snprintf(body, sizeof(body), "%.*s", (int)(at ? (size_t)(at - p) : strlen(p)), p);
	if (at && parse_duration(at + 1, strlen(at + 1), &from) != 0) {
		snprintf(err, errn, "bad time after '@'");
		return -1;
	}
	/* the fields, split on ',' and trimmed */
	for (const char *s = body;; nf++) {
		const char *c = strchr(s, ',');
		size_t l = c ? (size_t)(c - s) : strlen(s);
		if (nf == 8) {
			snprintf(err, errn, "too many fields");
			return -1;
		}
		while (l && (*s == ' ' || *s == '\t'))
			s++, l--;
		while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
			l--;
		fields[nf] = s;
		lens[nf] = l;
		if (!c) {
			nf++;
			break;
		}
		s = c + 1;
	}
#define IS(i, w) (lens[i] == strlen(w) && strncmp(fields[i], w, lens[i]) == 0)
	if (IS(0, "no") || IS(0, "nomux") || IS(0, "no-mux")) {
		if (nf != 1) {
			snprintf(err, errn, "no-mux takes no fields (`no`, optionally `no@FROM`)");
			return -1;
		}
		return 0;
	}
	if (IS(0, "tt") || IS(0, "et")) {
		int is_tt = IS(0, "tt"), i = 3;
		if (nf < 3 || nf > 5) {
			snprintf(err, errn, "expected tt,PERIOD,ACTIVE[,exact][,sf] or et,PERIOD,ACTIVE[,sf]");
			return -1;
		}
		if (parse_duration(fields[1], lens[1], &v) != 0) {
			snprintf(err, errn, "bad period '%.*s' (a time: 10ms, 500us, 1.5ms; a bare number is ms)",
				 (int)lens[1], fields[1]);
			return -1;
		}
		if (parse_duration(fields[2], lens[2], &v) != 0) {
			snprintf(err, errn, "bad active time '%.*s' (a time: 4ms, 500us; a bare number is ms)",
				 (int)lens[2], fields[2]);
			return -1;
		}
		if (is_tt && i < nf && IS(i, "exact"))
			i++;
		if (i < nf && IS(i, "sf"))
			i++;
		if (i < nf) {
			snprintf(err, errn, "unknown flag '%.*s'", (int)lens[i], fields[i]);
			return -1;
		}
		*tt = is_tt;
		return 0;
	}
	if (IS(0, "be")) {
		char w[16];
		char *end;
		unsigned long weight;
		if (nf < 2 || nf > 3 || from != 0) {
			snprintf(err, errn, "expected be,WEIGHT[,sf]");
			return -1;
		}
		if (lens[1] == 0 || lens[1] >= sizeof(w)) {
			snprintf(err, errn, "bad weight (1..65535)");
			return -1;
		}
		snprintf(w, sizeof(w), "%.*s", (int)lens[1], fields[1]);
		errno = 0;
		weight = strtoul(w, &end, 10);
		/* u16's parse: digits, optionally after a '+' */
		if (*end || !((w[0] >= '0' && w[0] <= '9') || (w[0] == '+' && w[1] >= '0' && w[1] <= '9')) ||
		    errno || weight == 0 || weight > 65535) {
			snprintf(err, errn, "bad weight '%s' (1..65535)", w);
			return -1;
		}
		if (nf == 3 && !IS(2, "sf")) {
			snprintf(err, errn, "unknown flag '%.*s'", (int)lens[2], fields[2]);
			return -1;
		}
		return 0;
	}
#undef IS
	snprintf(err, errn, "unknown policy '%.*s'", (int)lens[0], fields[0]);
	return -1;
}

static int opt_gang(int val, const char *optarg, int remote)
{
	char err[256];
	int tt;
	(void)val;
	(void)remote;
	if (check_policy(optarg, &tt, err, sizeof(err)) != 0) {
		slurm_error("gang_spank: --gang=%s: not a gang policy: %s (want "
			    "tt,PERIOD,ACTIVE[,exact][,sf][@FROM] | et,PERIOD,ACTIVE[,sf][@FROM] | "
			    "be,WEIGHT[,sf] | no, e.g. --gang=tt,10ms,4ms)",
			    optarg ? optarg : "", err);
		return -1;
	}
	snprintf(policy, sizeof(policy), "%s", optarg);
	policy_set = 1;
	return 0;
}

static struct spank_option gang_option = {
	"gang", "POLICY",
	"co-schedule this step's tasks on each node as a gang domain with gang_policy POLICY "
	"(tt,PERIOD,ACTIVE | et,PERIOD,ACTIVE | be,WEIGHT; e.g. tt,10ms,4ms)",
	1, 0, opt_gang,
};

static int args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		const char *a = av[i];
		if (strncmp(a, "gang=", 5) == 0)
			gang_bin = a + 5;
		else if (strncmp(a, "socket=", 7) == 0)
			gang_socket = a + 7;
		else if (strncmp(a, "pool=", 5) == 0)
			gang_pool = a + 5;
		else if (strncmp(a, "dir=", 4) == 0)
			conf_dir = a + 4;
		else if (strncmp(a, "cluster=", 8) == 0)
			cluster = strcmp(a + 8, "1") == 0 || strcmp(a + 8, "yes") == 0;
		else if (strncmp(a, "timeout=", 8) == 0)
			timeout_s = (unsigned)strtoul(a + 8, NULL, 10);
		else {
			slurm_error("gang_spank: unknown argument '%s' (gang= socket= pool= dir= "
				    "cluster= timeout=)", a);
			return -1;
		}
	}
	if (timeout_s == 0)
		timeout_s = 30;
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	if (args(ac, av) != 0)
		return -1;
	/* in every context: srun/sbatch/salloc check it, slurmstepd reads it */
	if (spank_option_register(sp, &gang_option) != ESPANK_SUCCESS) {
		slurm_error("gang_spank: cannot register --gang");
		return -1;
	}
	return 0;
}

/* the option's value in slurmstepd (the callback may not have run there) */
static int have_policy(spank_t sp)
{
	char *v = NULL;
	if (!policy_set && spank_option_getopt(sp, &gang_option, &v) == ESPANK_SUCCESS && v) {
		int tt;
		char err[256];
		if (check_policy(v, &tt, err, sizeof(err)) == 0) {
			snprintf(policy, sizeof(policy), "%s", v);
			policy_set = 1;
		}
	}
	return policy_set;
}

/* a step that gets a domain: remote, --gang given, a real step (not batch/extern) */
static int our_step(spank_t sp, uint32_t *job, uint32_t *step)
{
	if (!spank_remote(sp) || !have_policy(sp))
		return 0;
	if (spank_get_item(sp, S_JOB_ID, job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_STEPID, step) != ESPANK_SUCCESS)
		return 0;
	if (*step == GS_BATCH_SCRIPT || *step == GS_EXTERN_CONT || *step == GS_PENDING_STEP ||
	    *step == GS_INTERACTIVE_STEP)
		return 0;
	return 1;
}

static void paths(uint32_t job, uint32_t step, char *cfg, char *failed, size_t n)
{
	snprintf(cfg, n, "%s/slurm-%u.%u.cfg", conf_dir, job, step);
	snprintf(failed, n, "%s/slurm-%u.%u.failed", conf_dir, job, step);
}

/* the freezer cgroup of pid, as a path under /sys/fs/cgroup/freezer ("" if none) */
static void freezer_of(pid_t pid, char *out, size_t n)
{
	char path[64], line[1024];
	FILE *f;
	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (!(f = fopen(path, "r")))
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c = strstr(line, ":freezer:");
		if (c) {
			c += strlen(":freezer:");
			c[strcspn(c, "\n")] = '\0';
			if (strcmp(c, "/") != 0)
				snprintf(out, n, "/sys/fs/cgroup/freezer%s", c);
			break;
		}
	}
	fclose(f);
}

/* Runs `gang ARGS...` with GANG_SOCKET, waits (at most timeout_s); its
 * stdout+stderr in out. Returns its exit status (-1: could not run, 124: timed out). */
static int run_gang(char *out, size_t outn, const char *a1, const char *a2, const char *a3)
{
	int fd[2], status;
	pid_t pid;
	size_t len = 0;
	ssize_t r;

	out[0] = '\0';
	if (pipe(fd) != 0) {
		snprintf(out, outn, "pipe: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(out, outn, "fork: %s", strerror(errno));
		close(fd[0]);
		close(fd[1]);
		return -1;
	}
	if (pid == 0) {
		sigset_t none;
		int devnull = open("/dev/null", O_RDONLY);
		const char *argv[] = {gang_bin, a1, a2, a3, NULL};
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGALRM, SIG_DFL);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(fd[1], 1);
		dup2(fd[1], 2);
		close(fd[0]);
		close(fd[1]);
		if (gang_socket)
			setenv("GANG_SOCKET", gang_socket, 1);
		/* the timer survives execve: gang is killed if it hangs */
		alarm(timeout_s);
		execv(gang_bin, (char *const *)argv);
		dprintf(2, "cannot run %s: %s", gang_bin, strerror(errno));
		_exit(127);
	}
	close(fd[1]);
	while ((r = read(fd[0], out + len, outn - 1 - len)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)r;
		if (len >= outn - 1) { /* drain the rest */
			char sink[256];
			while (read(fd[0], sink, sizeof(sink)) > 0)
				;
			break;
		}
	}
	out[len] = '\0';
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	/* one line for the log */
	while (len && (out[len - 1] == '\n' || out[len - 1] == ' '))
		out[--len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (out[i] == '\n')
			out[i] = ' ';
	if (WIFSIGNALED(status)) {
		if (WTERMSIG(status) == SIGALRM)
			snprintf(out + len, outn - len, "%s(timed out after %us)", len ? " " : "",
				 timeout_s);
		return WTERMSIG(status) == SIGALRM ? 124 : 128 + WTERMSIG(status);
	}
	return WEXITSTATUS(status);
}

/* mkdir -p, mode 0755 (the tasks, as the job's user, read the .failed files) */
static int mkdir_p(const char *dir)
{
	char path[1024];
	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = path + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(path, 0755) != 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int safe_string(const char *s)
{
	return strpbrk(s, "\"\\\n") == NULL;
}

/* Tells the step's tasks (task_init, in each task) that the domain was refused. */
static void mark_failed(const char *failed, const char *msg)
{
	int fd = open(failed, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		slurm_error("gang_spank: %s: %s", failed, strerror(errno));
		return;
	}
	dprintf(fd, "%s\n", msg);
	close(fd);
}

/*
 * The last local task is forked and in the step cgroup, no task has run its
 * program yet: make the domain. Returns 0 even when gang refuses (a -1 here
 * would end the step without a task ever running and srun would still exit
 * 0): the refusal is written where task_init finds it, and every task exits 1.
 */
int slurm_spank_task_post_fork(spank_t sp, int ac, char **av)
{
	uint32_t job, step, ntasks = 0, cpus_per_task = 1, vcpus;
	int taskid = -1, tt = 0;
	pid_t tpid = 0;
	char cg[1024], cfg[1024], failed[1024], out[4096], msg[4608], err[256];
	FILE *f;
	int rc;

	(void)ac;
	(void)av;
	if (!our_step(sp, &job, &step))
		return 0;
	if (spank_get_item(sp, S_TASK_ID, &taskid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &ntasks) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_TASK_PID, &tpid) != ESPANK_SUCCESS)
		return 0;
	if ((uint32_t)taskid + 1 != ntasks)
		return 0;
	/* a multi-threaded task (srun -c N) gets its N CPUs in the gang */
	if (spank_get_item(sp, S_STEP_CPUS_PER_TASK, &cpus_per_task) != ESPANK_SUCCESS ||
	    cpus_per_task == 0)
		cpus_per_task = 1;
	vcpus = ntasks * cpus_per_task;
	snprintf(name, sizeof(name), "slurm-%u.%u", job, step);
	paths(job, step, cfg, failed, sizeof(cfg));
	check_policy(policy, &tt, err, sizeof(err));

	if (mkdir_p(conf_dir) != 0) {
		snprintf(msg, sizeof(msg), "gang_spank: %s: cannot make %s: %s", name, conf_dir,
			 strerror(errno));
		goto refuse;
	}
	freezer_of(tpid, cg, sizeof(cg));
	if (!cg[0] || !safe_string(cg)) {
		snprintf(msg, sizeof(msg), "gang_spank: %s: task %d (pid %d) has no usable freezer "
			 "cgroup ('%s'; needs ProctrackType=proctrack/cgroup on cgroup v1)",
			 name, taskid, (int)tpid, cg);
		goto refuse;
	}
	if (gang_pool && !safe_string(gang_pool)) {
		snprintf(msg, sizeof(msg), "gang_spank: pool=%s: bad name", gang_pool);
		goto refuse;
	}
	if (!(f = fopen(cfg, "w"))) {
		snprintf(msg, sizeof(msg), "gang_spank: %s: %s: %s", name, cfg, strerror(errno));
		goto refuse;
	}
	fprintf(f, "# made by gang_spank for Slurm step %u.%u (removed when the step ends)\n",
		job, step);
	fprintf(f, "name = \"%s\"\ntype = \"process\"\ncgroup = \"%s\"\nvcpus = %u\n", name, cg,
		vcpus);
	if (gang_pool)
		fprintf(f, "pool = \"%s\"\n", gang_pool);
	fprintf(f, "gang_policy = \"%s\"\n", policy);
	if (cluster && tt)
		fprintf(f, "gang_group = \"%s\"\n", name);
	if (fclose(f) != 0) {
		snprintf(msg, sizeof(msg), "gang_spank: %s: %s: %s", name, cfg, strerror(errno));
		unlink(cfg);
		goto refuse;
	}
	tried = 1;
	rc = run_gang(out, sizeof(out), "create", "-q", cfg);
	if (rc != 0) {
		snprintf(msg, sizeof(msg), "gang_spank: --gang=%s: step %u.%u refused by gang "
			 "(exit %d): %s", policy, job, step, rc, out[0] ? out : "(no message)");
		/* a create that timed out may still have made it */
		if (rc == 124)
			run_gang(out, sizeof(out), "destroy", name, NULL);
		tried = 0;
		unlink(cfg);
		goto refuse;
	}
	slurm_info("gang_spank: step %u.%u is gang domain %s (%u CPUs, pool %s, gang_policy %s%s)",
		   job, step, name, vcpus, gang_pool ? gang_pool : "(default)", policy,
		   cluster && tt ? ", cluster gang" : "");
	return 0;
refuse:
	slurm_error("%s", msg);
	mark_failed(failed, msg);
	return 0;
}

/* In each task, just before it runs its program: the step's domain was refused -> exit 1. */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	uint32_t job, step;
	int taskid = -1;
	char cfg[1024], failed[1024], msg[4608] = "";
	FILE *f;

	(void)ac;
	(void)av;
	if (!our_step(sp, &job, &step))
		return 0;
	paths(job, step, cfg, failed, sizeof(cfg));
	if (!(f = fopen(failed, "r")))
		return 0;
	if (!fgets(msg, sizeof(msg), f))
		snprintf(msg, sizeof(msg), "gang_spank: the step's gang domain was refused\n");
	fclose(f);
	/* the task's stderr is the user's (once per node: the first local task) */
	if (spank_get_item(sp, S_TASK_ID, &taskid) == ESPANK_SUCCESS && taskid == 0) {
		fprintf(stderr, "%s", msg);
		fflush(stderr);
	}
	return -1;
}

/* slurmstepd, after the step's tasks have ended (normally, failed, or cancelled) */
int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	uint32_t job, step;
	char cfg[1024], failed[1024], out[4096];
	int rc;

	(void)ac;
	(void)av;
	if (!our_step(sp, &job, &step))
		return 0;
	paths(job, step, cfg, failed, sizeof(cfg));
	unlink(failed);
	if (!tried)
		return 0;
	rc = run_gang(out, sizeof(out), "destroy", name, NULL);
	/* the domain may have ended by itself when its cgroup emptied: gang then
	 * says "NAME is an invalid domain identifier", as xl does */
	if (rc != 0 && !strstr(out, "invalid domain identifier"))
		slurm_error("gang_spank: gang destroy %s: exit %d: %s", name, rc, out);
	else
		slurm_info("gang_spank: step %u.%u ended: domain %s destroyed", job, step, name);
	unlink(cfg);
	tried = 0;
	return 0;
}
