"""cffi builder of ``gateway.live._rtpsend`` (the C per-packet path of a WebRTC viewer's
sender, ``_rtpsend.c``), compiled when the package is installed (setup.py).

Where no C compiler is present the install still succeeds and ``gateway.live.srtp_out`` sends
from Python instead (slower, same packets); the gateway says which at start.
"""

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define CG_BATCH ...
    #define CG_MTU ...
    #define CG_TRAILER ...
    #define CG_RING ...
    typedef struct cg_out cg_out;
    cg_out *cg_out_new(uintptr_t ctx, uintptr_t protect, int fd, const char *name, unsigned int namelen, int gso);
    void cg_out_free(cg_out *o);
    int64_t cg_send_frame(cg_out *o, const char *blob, uint32_t ends_at, int count, int64_t first_canon, int pt,
                          uint32_t ssrc, uint32_t ts, uint16_t seq, const char *ext, unsigned int ext_len);
    int cg_send_packet(cg_out *o, const char *head, unsigned int head_len, const char *payload,
                       unsigned int payload_len);
    int64_t cg_canon(const cg_out *o, uint16_t seq);
    int cg_last_errno(const cg_out *o);
    int cg_last_status(const cg_out *o);
    int cg_gso(const cg_out *o);
    uint64_t cg_packets(const cg_out *o);
    uint64_t cg_octets(const cg_out *o);
    int64_t cg_packetize_frame(int hevc, const char *data, size_t n, int max_payload, char *out, size_t out_cap,
                               uint32_t *ends, int max_count);
    """
)
ffibuilder.set_source(
    "gateway.live._rtpsend",
    (Path(__file__).resolve().parent / "_rtpsend.c").read_text(),
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
