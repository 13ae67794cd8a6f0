/*
 * ipcpipe: the stages of a shell pipeline, for dumping one while data
 * flows through its pipes.
 *
 *   ipcpipe produce N     writes "line I <I*I>\n" for I in 0..N-1, about
 *                         one per millisecond
 *   ipcpipe filter        copies stdin to stdout, each line reversed
 *   ipcpipe consume FILE  appends stdin to FILE, then a line with the
 *                         number of lines and a checksum
 *
 * Everything goes through read(2) and write(2): no stdio buffer whose
 * content would depend on when the process was stopped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			perror("ipcpipe: write");
			exit(3);
		}
		p += w;
		n -= w;
	}
}

static ssize_t read_some(int fd, char *p, size_t n)
{
	for (;;) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			perror("ipcpipe: read");
			exit(3);
		}
		return r;
	}
}

static int produce(long n)
{
	char line[64];
	for (long i = 0; i < n; i++) {
		int len = snprintf(line, sizeof(line), "line %ld %ld\n", i, i * i);
		write_all(1, line, len);
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

static int filter(void)
{
	static char in[1 << 16], line[4096];
	size_t have = 0;
	ssize_t r;
	while ((r = read_some(0, in, sizeof(in))) > 0) {
		for (ssize_t i = 0; i < r; i++) {
			if (in[i] != '\n') {
				if (have < sizeof(line))
					line[have++] = in[i];
				continue;
			}
			for (size_t j = 0; j < have / 2; j++) {
				char c = line[j];
				line[j] = line[have - 1 - j];
				line[have - 1 - j] = c;
			}
			line[have++] = '\n';
			write_all(1, line, have);
			have = 0;
		}
	}
	return 0;
}

static int consume(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror(path);
		return 3;
	}
	static char buf[1 << 16];
	unsigned long long sum = 0, lines = 0;
	ssize_t r;
	while ((r = read_some(0, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < r; i++) {
			sum = sum * 31 + (unsigned char)buf[i];
			lines += buf[i] == '\n';
		}
		write_all(fd, buf, r);
	}
	char tail[64];
	int n = snprintf(tail, sizeof(tail), "lines %llu sum %llx\n", lines, sum);
	write_all(fd, tail, n);
	return close(fd) == 0 ? 0 : 3;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "produce") == 0)
		return produce(atol(argv[2]));
	if (argc == 2 && strcmp(argv[1], "filter") == 0)
		return filter();
	if (argc == 3 && strcmp(argv[1], "consume") == 0)
		return consume(argv[2]);
	fprintf(stderr, "usage: ipcpipe produce N | filter | consume FILE\n");
	return 2;
}
