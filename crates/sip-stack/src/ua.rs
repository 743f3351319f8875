//! ua (in progress).
