/*
 * Compatibility check: a program that, like CRIU's soccr/test/tcp-conn.c, declares the repair
 * queue ids itself after including soccr.h and is built as strict ISO C11 (glibc then hides its
 * own declarations). CRIU's soccr.h, configured on glibc, declares nothing there; neither may
 * this header. The program only pauses a fresh socket, asks for a queue that was never saved and
 * releases the handle.
 */
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "soccr.h"

enum {
	TCP_NO_QUEUE,
	TCP_RECV_QUEUE,
	TCP_SEND_QUEUE,
	TCP_QUEUES_NR,
};

int main(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct libsoccr_sk *sk = fd < 0 ? NULL : libsoccr_pause(fd);

	if (!sk) {
		perror("compat_own_enum: pause");
		return 1;
	}
	if (libsoccr_get_queue_bytes(sk, TCP_RECV_QUEUE, 0) ||
	    libsoccr_get_queue_bytes(sk, TCP_SEND_QUEUE, 0)) {
		fprintf(stderr, "compat_own_enum: queue bytes before any save\n");
		return 1;
	}
	libsoccr_release(sk);
	close(fd);
	printf("compat_own_enum: ok (%d queues)\n", TCP_QUEUES_NR - 1);
	return 0;
}
