/* The per-packet core of a WebRTC viewer's sender, in C (gateway/live/srtp_out.py).
 *
 * Once per camera frame, cg_packetize_frame splits the access unit into RTP payloads and lays
 * them out as the frame's *blob* (gateway/live/rtp_payloads.py), the one bytes object every
 * viewer's call reads: the payloads back to back, zeros up to a multiple of 4 bytes, then
 * where each payload ends, one native uint32_t per payload.
 *
 * For one viewer and one frame (gateway/live/rtp_fanout.py): write the viewer's 12-byte RTP
 * header before each payload in a slot of this viewer's buffer, let libsrtp protect the slot
 * in place (the srtp_protect of the DTLS session's own context, passed in as a pointer: aiortc
 * derived the keys), remember which camera packet each wire sequence number carried (for
 * NACKs), and hand the frame's packets to the kernel with sendmmsg. One call per viewer per
 * frame; the Python interpreter never touches a packet.
 *
 * Where the kernel allows (Linux >= 4.18), a run of equal-size packets (a NAL unit's FU-A
 * fragments) and the shorter one after it leave as one UDP GSO message (UDP_SEGMENT): the
 * kernel cuts it into the same datagrams after a single pass through the socket and IP layers,
 * and wakes a local receiver once per message instead of once per packet. A route or device
 * that refuses GSO (no checksum offload, IPsec, a segment above the path MTU) turns it off for
 * this viewer and the packets go out one message each, as before.
 *
 * cffi releases the GIL around each call, so the ingest threads run meanwhile.
 *
 * Only the event loop thread calls in, one call at a time per viewer: the SRTP context is
 * also used by aiortc (RTCP) on that thread, never concurrently.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define CG_BATCH 48
#define CG_MTU 1500
#define CG_TRAILER 144 /* libsrtp 2's SRTP_MAX_TRAILER_LEN: checked against pylibsrtp's at import */
#define CG_SLOT (CG_MTU + CG_TRAILER)
#define CG_RING 1024
#define CG_HEADER 12
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
/* A GSO message's bytes at most (a UDP datagram's limit is 65507 on IPv4). */
#define CG_GSO_BYTES 65000

typedef int (*cg_protect_fn)(void *ctx, void *rtp, int *len);

struct cg_out {
    void *ctx;
    cg_protect_fn protect;
    int fd;
    struct sockaddr_storage name;
    socklen_t namelen;
    int last_errno;
    int last_status;
    int gso; /* 1: equal-size runs leave as one UDP GSO message each */
    uint64_t packets; /* the frames' packets and payload octets, for RTCP sender reports */
    uint64_t octets;
    int64_t sent_canon[CG_RING];
    int32_t sent_wire[CG_RING];
    struct iovec iov[CG_BATCH];
    struct mmsghdr msgs[CG_BATCH];
    int msg_packets[CG_BATCH]; /* packets (slots) in each message */
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control[CG_BATCH];
    unsigned char slots[CG_BATCH][CG_SLOT];
};

typedef struct cg_out cg_out;

static cg_out *cg_out_new(uintptr_t ctx, uintptr_t protect, int fd, const char *name, unsigned int namelen,
                          int gso)
{
    cg_out *o;
    int k;
    if (namelen > sizeof(struct sockaddr_storage))
        return NULL;
    o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->ctx = (void *)ctx;
    o->protect = (cg_protect_fn)protect;
    o->fd = fd;
    memcpy(&o->name, name, namelen);
    o->namelen = namelen;
    o->gso = gso != 0;
    for (k = 0; k < CG_RING; k++) {
        o->sent_canon[k] = -1;
        o->sent_wire[k] = -1;
    }
    for (k = 0; k < CG_BATCH; k++) {
        o->iov[k].iov_base = o->slots[k];
        o->msgs[k].msg_hdr.msg_name = &o->name;
        o->msgs[k].msg_hdr.msg_namelen = namelen;
    }
    return o;
}

static void cg_out_free(cg_out *o)
{
    free(o);
}

/* Group slots [from, count) into messages msgs[0..]; returns how many. With GSO a run of
 * packets of one size, and one shorter packet after it, is one message cut at that size
 * (the kernel's rule: every segment that size but the last); else a message per packet. */
static int cg_messages(cg_out *o, int from, int count)
{
    int m = 0, k = from;
    while (k < count) {
        size_t size = o->iov[k].iov_len, total = size;
        struct msghdr *h = &o->msgs[m].msg_hdr;
        int n = 1;
        if (o->gso) {
            while (k + n < count && o->iov[k + n].iov_len == size && total + size <= CG_GSO_BYTES) {
                total += size;
                n++;
            }
            if (k + n < count && o->iov[k + n].iov_len < size && total + o->iov[k + n].iov_len <= CG_GSO_BYTES)
                n++;
        }
        h->msg_iov = &o->iov[k];
        h->msg_iovlen = (size_t)n;
        if (n > 1) {
            struct cmsghdr *c = &o->control[m].align;
            uint16_t segment = (uint16_t)size;
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(segment));
            memcpy(CMSG_DATA(c), &segment, sizeof(segment));
            h->msg_control = o->control[m].buf;
            h->msg_controllen = CMSG_SPACE(sizeof(segment));
        } else {
            h->msg_control = NULL;
            h->msg_controllen = 0;
        }
        o->msg_packets[m++] = n;
        k += n;
    }
    return m;
}

/* Why sendmmsg may refuse a GSO message that the same packets one by one would pass. */
static int cg_gso_refused(int code)
{
    return code == EIO || code == EINVAL || code == EMSGSIZE || code == EOPNOTSUPP || code == ENOPROTOOPT;
}

/* Send slots 0..count-1. Returns how many packets a full socket buffer dropped, or -1 (errno
 * in last_errno) when the socket is gone. */
static int cg_flush(cg_out *o, int count)
{
    int k = 0; /* the first slot not sent yet */
    while (k < count) {
        int m = cg_messages(o, k, count), done = 0;
        while (done < m) {
            int sent = sendmmsg(o->fd, &o->msgs[done], (unsigned int)(m - done), MSG_DONTWAIT), i;
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return count - k; /* the viewer's NACK brings them back */
                if (o->msg_packets[done] > 1 && cg_gso_refused(errno)) {
                    o->gso = 0; /* this path cannot take GSO: the rest one message per packet */
                    break;
                }
                o->last_errno = errno;
                return -1;
            }
            for (i = 0; i < sent; i++)
                k += o->msg_packets[done + i];
            done += sent;
        }
    }
    return 0;
}

static void cg_header(unsigned char *p, int pt_marker, uint16_t seq, uint32_t ts, uint32_t ssrc)
{
    p[0] = 0x80;
    p[1] = (unsigned char)pt_marker;
    p[2] = (unsigned char)(seq >> 8);
    p[3] = (unsigned char)seq;
    p[4] = (unsigned char)(ts >> 24);
    p[5] = (unsigned char)(ts >> 16);
    p[6] = (unsigned char)(ts >> 8);
    p[7] = (unsigned char)ts;
    p[8] = (unsigned char)(ssrc >> 24);
    p[9] = (unsigned char)(ssrc >> 16);
    p[10] = (unsigned char)(ssrc >> 8);
    p[11] = (unsigned char)ssrc;
}

/* One frame to one viewer. ``blob`` is the frame's blob (above), its payload ends at
 * ``blob + ends_at``, ``count`` of them; the marker bit goes on the last payload. Wire sequence
 * numbers follow ``seq``. ``ext`` (``ext_len`` bytes, a multiple of 4) is the viewer's RTP
 * header extension block (RFC 8285), written after every header; none when ``ext_len`` is 0.
 * Returns (packets a full socket buffer dropped) << 16 | the last wire sequence number, or
 * -1 when the socket is gone (last_errno), -2 when libsrtp refused (last_status), -3 for a
 * malformed blob or a payload too large for a slot. */
static int64_t cg_send_frame(cg_out *o, const char *blob, uint32_t ends_at, int count, int64_t first_canon, int pt,
                             uint32_t ssrc, uint32_t ts, uint16_t seq, const char *ext, unsigned int ext_len)
{
    uint32_t start = 0;
    int64_t dropped = 0;
    int k = 0, i, r;
    if (ext_len > 64 || ext_len % 4 || count < 0 || ends_at % 4)
        return -3;
    for (i = 0; i < count; i++) {
        uint32_t end, n;
        unsigned char *p = o->slots[k];
        int len;
        memcpy(&end, blob + ends_at + 4 * (size_t)i, sizeof(end));
        n = end - start;
        if (end < start || end > ends_at || n > CG_MTU - CG_HEADER - ext_len)
            return -3;
        len = (int)(CG_HEADER + ext_len + n);
        seq = (uint16_t)(seq + 1);
        o->sent_canon[seq & (CG_RING - 1)] = first_canon + i;
        o->sent_wire[seq & (CG_RING - 1)] = seq;
        cg_header(p, i == count - 1 ? (pt | 0x80) : pt, seq, ts, ssrc);
        if (ext_len) {
            p[0] |= 0x10; /* X: the header extension block follows */
            memcpy(p + CG_HEADER, ext, ext_len);
        }
        memcpy(p + CG_HEADER + ext_len, blob + start, n);
        r = o->protect(o->ctx, p, &len);
        if (r != 0) {
            o->last_status = r;
            return -2;
        }
        o->iov[k].iov_len = (size_t)len;
        o->octets += n;
        start = end;
        if (++k == CG_BATCH) {
            r = cg_flush(o, k);
            if (r < 0)
                return r;
            dropped += r;
            k = 0;
        }
    }
    o->packets += (uint64_t)count;
    r = cg_flush(o, k);
    return r < 0 ? r : (dropped + r) << 16 | seq;
}

/* One packet (a retransmission): ``head`` (the RTP header, and RTX's original sequence
 * number) then ``payload``, protected and sent. Returns 0 sent, 1 dropped, or < 0 as above. */
static int cg_send_packet(cg_out *o, const char *head, unsigned int head_len, const char *payload,
                          unsigned int payload_len)
{
    unsigned char *p = o->slots[0];
    int len = (int)(head_len + payload_len), r;
    if (head_len + payload_len > CG_MTU)
        return -3;
    memcpy(p, head, head_len);
    memcpy(p + head_len, payload, payload_len);
    r = o->protect(o->ctx, p, &len);
    if (r != 0) {
        o->last_status = r;
        return -2;
    }
    o->iov[0].iov_len = (size_t)len;
    return cg_flush(o, 1);
}

/* The camera packet wire sequence number ``seq`` carried, or -1 when forgotten. */
static int64_t cg_canon(const cg_out *o, uint16_t seq)
{
    unsigned int i = seq & (CG_RING - 1);
    return o->sent_wire[i] == (int32_t)seq ? o->sent_canon[i] : -1;
}

static int cg_last_errno(const cg_out *o)
{
    return o->last_errno;
}

static int cg_last_status(const cg_out *o)
{
    return o->last_status;
}

static uint64_t cg_packets(const cg_out *o)
{
    return o->packets;
}

static uint64_t cg_octets(const cg_out *o)
{
    return o->octets;
}

/* 1 while this viewer's packets leave in GSO messages. */
static int cg_gso(const cg_out *o)
{
    return o->gso;
}

/* -- packetizing, once per camera frame -------------------------------------------------- */

/* The next "00 00 01" in d[from, n), or -1. */
static long cg_find_start(const unsigned char *d, size_t n, size_t from)
{
    while (from + 3 <= n) {
        const unsigned char *z = memchr(d + from, 0, n - from - 2);
        if (z == NULL)
            return -1;
        from = (size_t)(z - d);
        if (d[from + 1] == 0 && d[from + 2] == 1)
            return (long)from;
        from++;
    }
    return -1;
}

/* Append one NAL unit as RTP payloads: whole, or in FU-A (H.264) / FU (H.265) fragments.
 * Returns 0, or -1 when ``out`` or ``ends`` has no room. */
static int cg_add_nal(int hevc, const unsigned char *nal, size_t len, size_t max_payload, unsigned char *out,
                      size_t out_cap, size_t *pos, uint32_t *ends, int max_count, int *count)
{
    size_t head = hevc ? 3 : 2, body_at = hevc ? 2 : 1, step, start, body_len;
    unsigned char kind;
    if (len <= max_payload) {
        if (*count >= max_count || *pos + len > out_cap)
            return -1;
        memcpy(out + *pos, nal, len);
        *pos += len;
        ends[(*count)++] = (uint32_t)*pos;
        return 0;
    }
    step = max_payload - head;
    body_len = len - body_at;
    kind = hevc ? ((nal[0] >> 1) & 0x3F) : (nal[0] & 0x1F);
    for (start = 0; start < body_len; start += step) {
        size_t chunk = body_len - start < step ? body_len - start : step;
        unsigned char fu = kind;
        unsigned char *p;
        if (*count >= max_count || *pos + head + chunk > out_cap)
            return -1;
        if (start == 0)
            fu |= 0x80;
        if (start + step >= body_len)
            fu |= 0x40;
        p = out + *pos;
        if (hevc) {
            p[0] = (unsigned char)((nal[0] & 0x81) | (49 << 1));
            p[1] = nal[1];
            p[2] = fu;
        } else {
            p[0] = (unsigned char)((nal[0] & 0xE0) | 28);
            p[1] = fu;
        }
        memcpy(p + head, nal + body_at + start, chunk);
        *pos += head + chunk;
        ends[(*count)++] = (uint32_t)*pos;
    }
    return 0;
}

/* Split an Annex B access unit into RTP payloads, back to back in ``out``, payload i ending at
 * ``ends[i]`` (RFC 6184 / RFC 7798; access unit delimiters dropped: the marker bit delimits
 * access units). The same payloads as gateway.rtsp.rtp.fragment_access_unit (tested).
 * Returns how many, or -1 when ``out`` or ``ends`` is too small. */
static int cg_split(int hevc, const char *data, size_t n, int max_payload, char *out, size_t out_cap, uint32_t *ends,
                    int max_count)
{
    const unsigned char *d = (const unsigned char *)data;
    unsigned char *o = (unsigned char *)out;
    unsigned int aud = hevc ? 35 : 9;
    size_t pos = 0, start;
    int count = 0;
    long i = cg_find_start(d, n, 0);
    if (max_payload < 4)
        return -1;
    if (i < 0) {
        if (n == 0)
            return 0;
        if (((hevc ? (d[0] >> 1) & 0x3F : d[0] & 0x1F) == aud))
            return 0;
        return cg_add_nal(hevc, d, n, (size_t)max_payload, o, out_cap, &pos, ends, max_count, &count) < 0 ? -1 : count;
    }
    start = (size_t)i + 3;
    for (;;) {
        long j = cg_find_start(d, n, start);
        size_t end = j < 0 ? n : (size_t)j;
        if (j < 0) {
            /* the last NAL: trailing zeros are padding when at least two end it */
            if (end >= start + 2 && d[end - 1] == 0 && d[end - 2] == 0)
                while (end > start && d[end - 1] == 0)
                    end--;
        } else if (end > start && d[end - 1] == 0) {
            end--; /* the first zero of a 4-byte start code */
        }
        if (end > start) {
            const unsigned char *nal = d + start;
            unsigned int type = hevc ? (nal[0] >> 1) & 0x3F : nal[0] & 0x1F;
            if (type != aud && cg_add_nal(hevc, nal, end - start, (size_t)max_payload, o, out_cap, &pos, ends,
                                          max_count, &count) < 0)
                return -1;
        }
        if (j < 0)
            return count;
        start = (size_t)j + 3;
    }
}

/* An access unit as a frame's blob in ``out`` (the layout at the top; ``ends`` is scratch room
 * for ``max_count`` ends). Returns count << 32 | the blob's length, or -1 when ``out`` or
 * ``ends`` is too small. */
static int64_t cg_packetize_frame(int hevc, const char *data, size_t n, int max_payload, char *out, size_t out_cap,
                                  uint32_t *ends, int max_count)
{
    int count = cg_split(hevc, data, n, max_payload, out, out_cap, ends, max_count);
    size_t size, at;
    if (count < 0)
        return -1;
    size = count ? ends[count - 1] : 0;
    at = (size + 3) / 4 * 4;
    if (at + 4 * (size_t)count > out_cap || at + 4 * (size_t)count > UINT32_MAX)
        return -1;
    memset(out + size, 0, at - size);
    memcpy(out + at, ends, 4 * (size_t)count);
    return (int64_t)count << 32 | (int64_t)(at + 4 * (size_t)count);
}
