"""Live view outputs: WebRTC (WHEP) and LL-HLS, each fed by camera hub readers."""
