/* Deterministic byte streams for the C tests: every byte's value depends on its direction and
 * position, so the reader checks each byte, and both ends keep a count and an FNV-1a hash. */
#ifndef NCR_TEST_STREAM_H
#define NCR_TEST_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct stream {
	int dir;                 /* 0 = peer -> migrated socket, 1 = migrated socket -> peer */
	uint64_t written, read;  /* byte counts */
	uint64_t hash_w, hash_r; /* FNV-1a of the bytes written / read */
	bool eof;                /* reader saw EOF */
};

void stream_init(struct stream *s, int dir);
uint8_t stream_byte(int dir, uint64_t pos);
/* Writes up to max bytes (non-blocking socket); returns bytes written (0 on EAGAIN) or -1. */
ssize_t stream_write(int fd, struct stream *s, uint64_t max);
/* Reads what is available; 0 = ok/EAGAIN, 1 = EOF, -1 = error or a wrong byte. */
int stream_read(int fd, struct stream *s);
/* Writes exactly n bytes, waiting (bounded) for room. */
int stream_write_all(int fd, struct stream *s, uint64_t n, int timeout_ms);

/* Both directions after a restore: each end writes extra more bytes (unless its write side is
 * already shut), then shuts its write side; both read until EOF. Fails on any error (ECONNRESET,
 * EPIPE), wrong byte, or timeout, then compares counts and hashes. */
struct pump_end {
	int fd;
	struct stream *out, *in;
	uint64_t extra;   /* bytes to write */
	bool wr_shut;     /* write side already shut (FIN sent before the migration) */
	bool rd_eof;      /* EOF already read */
};
int pump_until_closed(struct pump_end *a, struct pump_end *b, int timeout_ms);

#endif
