//! rtp_session (in progress).
