//! Response framing that the protocol crate cannot do for us: a Fetch response whose
//! record data stays in the segment files and goes out with `sendfile`; and the
//! connection's outbox, which writes answers with `writev`.

pub mod fetch_frame;
pub mod outbox;

pub use fetch_frame::{Chunk, frame_fetch_response};
pub use outbox::Outbox;
