//! Response framing that the protocol crate cannot do for us: a Fetch response whose
//! record data stays in the segment files and goes out with `sendfile`.

pub mod fetch_frame;

pub use fetch_frame::{Chunk, frame_fetch_response};
