//! Codecs (in progress).
