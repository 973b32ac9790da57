/*
 * spank_probe: a SPANK plugin that logs what each callback sees, to find where a
 * gang domain for a job step's cgroup should be created and destroyed.
 *
 * Build (needs spank.h: Debian's libslurm-dev):
 *   cc -shared -fPIC -Wall -o spank_probe.so contrib/slurm/spank_probe.c
 * Load: a line in the plugstack.conf named by slurm.conf's PlugStackConfig:
 *   required /abs/path/spank_probe.so log=/abs/path/spank_probe.log
 *
 * Registers --gang=POLICY (srun, sbatch, salloc). POLICY is checked in the
 * option callback the way gang's parser would see its first field: tt,..
 * et,.. be,.. or no; anything else makes srun/sbatch refuse the job, with the
 * message on the user's terminal.
 *
 * Each log line: time, context, callback, uid/euid, pid, job.step, the task
 * (local id, pid, what it runs now), --gang's value, the step's freezer cgroup
 * and the pids in it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(spank_probe, 1);

static char gang_policy[256];
static int gang_set;
static const char *log_path = "/tmp/spank_probe.log";
static const char *fail_cb = ""; /* plugin arg fail=CALLBACK: that callback returns -1 */

static int check_policy(const char *p)
{
	static const char *kinds[] = {"tt,", "et,", "be,", NULL};
	if (p == NULL || *p == '\0')
		return -1;
	if (strcmp(p, "no") == 0)
		return 0;
	for (int i = 0; kinds[i]; i++)
		if (strncmp(p, kinds[i], 3) == 0 && p[3] != '\0')
			return 0;
	return -1;
}

static int opt_gang(int val, const char *optarg, int remote)
{
	(void)val;
	if (check_policy(optarg) != 0) {
		slurm_error("spank_probe: --gang=%s: not a gang policy "
			    "(want tt,PERIOD,SLICE | et,PERIOD,SLICE[,sf] | be,WEIGHT | no)",
			    optarg ? optarg : "");
		return -1;
	}
	snprintf(gang_policy, sizeof(gang_policy), "%s", optarg);
	gang_set = 1;
	(void)remote;
	return 0;
}

static struct spank_option gang_option = {
	"gang", "POLICY",
	"co-schedule this step's tasks as a gang domain with POLICY (e.g. tt,10ms,4ms)",
	1, 0, opt_gang,
};

static const char *ctx_name(void)
{
	switch (spank_context()) {
	case S_CTX_LOCAL: return "local(srun)";
	case S_CTX_REMOTE: return "remote(slurmstepd)";
	case S_CTX_ALLOCATOR: return "allocator(sbatch/salloc)";
	case S_CTX_SLURMD: return "slurmd";
	case S_CTX_JOB_SCRIPT: return "job_script(prolog/epilog)";
	default: return "error";
	}
}

/* the freezer line of /proc/PID/cgroup, or "" */
static void freezer_of(pid_t pid, char *out, size_t n)
{
	char path[64], line[512];
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
			snprintf(out, n, "/sys/fs/cgroup/freezer%s", c);
			break;
		}
	}
	fclose(f);
}

static void procs_of(const char *cg, char *out, size_t n)
{
	char path[600], line[32];
	FILE *f;
	size_t len = 0;
	out[0] = '\0';
	if (!cg[0] || cg[strlen(cg) - 1] == '/') /* the root cgroup: not listed */
		return;
	snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
	if (!(f = fopen(path, "r"))) {
		snprintf(out, n, "(%s)", strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f) && len + 16 < n) {
		line[strcspn(line, "\n")] = '\0';
		len += snprintf(out + len, n - len, "%s%s", len ? "," : "", line);
	}
	fclose(f);
}

static void comm_of(pid_t pid, char *out, size_t n)
{
	char path[64];
	FILE *f;
	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if ((f = fopen(path, "r"))) {
		if (fgets(out, n, f))
			out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

static void probe(spank_t sp, const char *cb)
{
	uint32_t job = 0, step = 0;
	int taskid = -1, status = -1, have_status = 0;
	pid_t tpid = 0;
	char own_cg[512], task_cg[512], procs[512], comm[64] = "";
	struct timeval tv;
	struct tm tm;
	FILE *f;

	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS)
		job = 0;
	if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
		step = 0;
	if (spank_get_item(sp, S_TASK_ID, &taskid) != ESPANK_SUCCESS)
		taskid = -1;
	if (spank_get_item(sp, S_TASK_PID, &tpid) != ESPANK_SUCCESS)
		tpid = 0;
	if (spank_get_item(sp, S_TASK_EXIT_STATUS, &status) == ESPANK_SUCCESS)
		have_status = 1;
	/* getopt works only in some callbacks; the option callback covers the others */
	if (!gang_set) {
		char *v = NULL;
		if (spank_option_getopt(sp, &gang_option, &v) == ESPANK_SUCCESS && v) {
			snprintf(gang_policy, sizeof(gang_policy), "%s", v);
			gang_set = 1;
		}
	}
	freezer_of(getpid(), own_cg, sizeof(own_cg));
	task_cg[0] = '\0';
	if (tpid > 0) {
		freezer_of(tpid, task_cg, sizeof(task_cg));
		comm_of(tpid, comm, sizeof(comm));
	}
	procs_of(task_cg[0] ? task_cg : own_cg, procs, sizeof(procs));

	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	if (!(f = fopen(log_path, "a")))
		return;
	fprintf(f, "%02d:%02d:%02d.%06ld %-25s %-28s uid=%d euid=%d pid=%d job=%u step=%u"
		   " task=%d task_pid=%d task_comm=%s%s gang=%s own_cg=%s task_cg=%s cg_procs=[%s]",
		tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec, ctx_name(), cb,
		(int)getuid(), (int)geteuid(), (int)getpid(), job, step, taskid, (int)tpid,
		comm[0] ? comm : "-", "", gang_set ? gang_policy : "-",
		own_cg[0] ? own_cg : "-", task_cg[0] ? task_cg : "-", procs);
	if (have_status)
		fprintf(f, " exit_status=0x%x", status);
	fputc('\n', f);
	fclose(f);
}

static void args(int ac, char **av)
{
	for (int i = 0; i < ac; i++)
		if (strncmp(av[i], "log=", 4) == 0)
			log_path = av[i] + 4;
		else if (strncmp(av[i], "fail=", 5) == 0)
			fail_cb = av[i] + 5;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	args(ac, av);
	/* the only way to have the option in sbatch/salloc as well */
	if (spank_option_register(sp, &gang_option) != ESPANK_SUCCESS)
		slurm_error("spank_probe: cannot register --gang");
	probe(sp, "init");
	return 0;
}

#define PROBE(name)                                              \
	int slurm_spank_##name(spank_t sp, int ac, char **av)    \
	{                                                        \
		args(ac, av);                                    \
		probe(sp, #name);                                \
		if (strcmp(fail_cb, #name) == 0) {               \
			slurm_error("spank_probe: %s fails (fail=%s)", \
				    #name, fail_cb);             \
			return -1;                               \
		}                                                \
		return 0;                                        \
	}

PROBE(job_prolog)
PROBE(init_post_opt)
PROBE(local_user_init)
PROBE(user_init)
PROBE(task_init_privileged)
PROBE(task_init)
PROBE(task_post_fork)
PROBE(task_exit)
PROBE(job_epilog)
PROBE(slurmd_exit)
PROBE(exit)
