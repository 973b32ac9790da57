/*
 * policy_check: gang_spank.c's --gang=POLICY check as a program, so that a
 * test can hold it against gang's own parser (crates/gang-cli/tests/xl_slurm.rs).
 * Reads one policy a line on stdin, prints "OK\tPOLICY" or "BAD\tPOLICY".
 *
 *   cc -o policy_check contrib/slurm/policy_check.c     (needs spank.h)
 */
#include "gang_spank.c"

/* the plugin's Slurm calls, unused here */
void slurm_error(const char *fmt, ...) { (void)fmt; }
void slurm_info(const char *fmt, ...) { (void)fmt; }
spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
	(void)sp;
	(void)opt;
	return ESPANK_ERROR;
}
spank_err_t spank_option_getopt(spank_t sp, struct spank_option *opt, char **optarg)
{
	(void)sp;
	(void)opt;
	(void)optarg;
	return ESPANK_ERROR;
}
int spank_remote(spank_t sp)
{
	(void)sp;
	return 0;
}
spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)
{
	(void)sp;
	(void)item;
	return ESPANK_ERROR;
}

int main(void)
{
	char line[1024], err[256];
	int tt;
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = '\0';
		printf("%s\t%s\n", check_policy(line, &tt, err, sizeof(err)) == 0 ? "OK" : "BAD", line);
	}
	return 0;
}
