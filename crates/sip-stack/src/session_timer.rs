//! session_timer (in progress).
