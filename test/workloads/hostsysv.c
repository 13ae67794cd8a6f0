/*
 * hostsysv: SysV objects of the host's IPC namespace used by a process
 * that is not in a container: a shared memory segment it keeps attached
 * (a pattern in it), a semaphore set of three (values 1, 7, 42, the last
 * operation its own) and a message queue holding two messages. ready
 * prints the ids. After restore it finds each again under its key with
 * the same id and content, and the segment still attached where it was.
 */
#include "workload.h"

#include <stdint.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define SHM_SIZE (256 * 1024)

struct msgbuf2 {
	long mtype;
	char text[32];
};

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	key_t base = 0x7c000000 + (getpid() & 0xffff) * 4;
	int shmid = shmget(base, SHM_SIZE, IPC_CREAT | IPC_EXCL | 0640);
	int semid = semget(base + 1, 3, IPC_CREAT | IPC_EXCL | 0600);
	int msqid = msgget(base + 2, IPC_CREAT | IPC_EXCL | 0660);
	if (shmid < 0 || semid < 0 || msqid < 0)
		wl_die("create SysV objects");
	unsigned char *seg = shmat(shmid, NULL, 0);
	if (seg == (void *)-1)
		wl_die("shmat");
	for (int i = 0; i < SHM_SIZE; i++)
		seg[i] = (unsigned char)(i * 7 + 3);
	unsigned short vals[3] = { 1, 7, 41 };
	if (semctl(semid, 0, SETALL, vals) < 0)
		wl_die("semctl SETALL");
	struct sembuf op = { .sem_num = 2, .sem_op = 1 };
	if (semop(semid, &op, 1) < 0) /* 42, and sempid is this process */
		wl_die("semop");
	struct msgbuf2 m1 = { 1, "first" }, m2 = { 2, "second" };
	if (msgsnd(msqid, &m1, sizeof(m1.text), 0) < 0 || msgsnd(msqid, &m2, sizeof(m2.text), 0) < 0)
		wl_die("msgsnd");
	wl_ready("pid %d\nshm %d\nsem %d\nmsq %d\nkey %d\naddr %p\n", getpid(), shmid, semid, msqid, base, (void *)seg);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (shmget(base, 0, 0) != shmid)
		wl_fail("segment key %#x has id %d, want %d", base, shmget(base, 0, 0), shmid);
	for (int i = 0; i < SHM_SIZE; i++)
		if (seg[i] != (unsigned char)(i * 7 + 3)) {
			wl_fail("segment byte %d is %u", i, seg[i]);
			break;
		}
	struct shmid_ds ds;
	if (shmctl(shmid, IPC_STAT, &ds) < 0 || ds.shm_nattch != 1)
		wl_fail("segment attached %lu times, want 1 (this process)", (unsigned long)ds.shm_nattch);
	if (semget(base + 1, 0, 0) != semid)
		wl_fail("semaphore key has id %d, want %d", semget(base + 1, 0, 0), semid);
	unsigned short got[3] = { 0 };
	if (semctl(semid, 0, GETALL, got) < 0 || got[0] != 1 || got[1] != 7 || got[2] != 42)
		wl_fail("semaphores are %u %u %u, want 1 7 42", got[0], got[1], got[2]);
	if (msgget(base + 2, 0) != msqid)
		wl_fail("queue key has id %d, want %d", msgget(base + 2, 0), msqid);
	struct msgbuf2 r;
	if (msgrcv(msqid, &r, sizeof(r.text), 0, IPC_NOWAIT) < 0 || r.mtype != 1 || strcmp(r.text, "first"))
		wl_fail("first message: type %ld %s", r.mtype, r.text);
	if (msgrcv(msqid, &r, sizeof(r.text), 0, IPC_NOWAIT) < 0 || r.mtype != 2 || strcmp(r.text, "second"))
		wl_fail("second message: type %ld %s", r.mtype, r.text);
	shmdt(seg);
	shmctl(shmid, IPC_RMID, NULL);
	semctl(semid, 0, IPC_RMID);
	msgctl(msqid, IPC_RMID, NULL);
	return wl_finish();
}
