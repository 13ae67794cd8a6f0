/*
 * vforker: a parent waiting in vfork for a child that neither execs nor
 * exits. ptrace cannot stop a task there, so ctcr must refuse the dump
 * (naming the task) instead of hanging; nothing is checked after restore.
 */
#include "workload.h"

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (vfork() == 0) {
		wl_ready("vfork child\n");
		for (;;)
			pause();
	}
	return wl_finish();
}
