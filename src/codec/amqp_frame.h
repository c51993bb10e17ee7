/* The frames of the AMQP 1.0 byte stream a client sends (protocol
 * headers, SASL frames, AMQP frames), scanned on their way to the engine
 * so that the frames a client sends on a channel it has already ended are
 * dropped.
 *
 * Why: the Event Hubs and IoT service clients (rhea) settle deliveries that
 * reach them after they sent a session's end, so a disposition follows the
 * end on the same channel. Proton treats any frame on a channel the peer
 * ended as a protocol error and closes the whole connection, which takes
 * the client's other links down with it (the link closes it is waiting for
 * never come). A session that is over has nothing left to settle, so such
 * a frame (attach, flow, transfer, disposition, detach, end) is dropped; a
 * begin on the channel opens it again. Open and close are the connection's
 * and always pass.
 *
 * Everything else passes unchanged, byte for byte: what the scanner does
 * not understand (an extended frame header, a descriptor it cannot read,
 * bytes that are no frame at all) is the engine's to judge. A frame it
 * cannot read on an ended channel passes and ends the watch on that
 * channel; after bytes that are no frame (or a stream that does not open
 * with a protocol header) everything passes. Only an AMQP frame is held
 * back, until its first AMQP_SCAN_HEAD bytes are in; empty frames
 * (heartbeats, whatever their channel) always pass.
 *
 * Pure and bounded (a few dozen bytes of state); tests/unit/test_amqp_frame.c
 * and tests/fuzz/fuzz_amqp_frame.c drive it. */
#ifndef FH_CODEC_AMQP_FRAME_H
#define FH_CODEC_AMQP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AMQP_SCAN_CHANNELS 64 /* channels tracked (the endpoint allows 0-63) */
#define AMQP_SCAN_HEAD 32     /* bytes of a frame read before it is passed */

/* Bytes to hand on to the engine. */
typedef void (*amqp_scan_out)(void *arg, const uint8_t *p, size_t n);

struct amqp_scan {
	uint8_t head[AMQP_SCAN_HEAD]; /* the start of the frame being read */
	size_t have;                  /* bytes in head */
	uint64_t rest;                /* bytes of the current frame still to go */
	bool drop;                    /* they are dropped, not passed */
	bool raw;                     /* not a frame stream: everything passes */
	bool started;                 /* a protocol header has passed */
	uint64_t ended;               /* channels the client has ended (bits) */
	uint64_t dropped;             /* frames dropped so far */
	unsigned drop_channel;        /* the last one's channel */
	int drop_code;                /* and performative code */
	uint32_t max_frame;           /* larger frames pass unread */
};

/* max_frame: the largest frame the engine accepts (it refuses larger ones
 * on their first 8 bytes). */
void amqp_scan_init(struct amqp_scan *s, uint32_t max_frame);

/* Scans n more bytes of the stream; calls out with the bytes to pass on, in
 * order (a frame's first bytes may be held until enough of it is read). */
void amqp_scan_feed(struct amqp_scan *s, const uint8_t *p, size_t n, amqp_scan_out out,
		    void *arg);

#endif
