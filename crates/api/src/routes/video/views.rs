//! The JSON of a video (contract §2.7), rendered by the video machine.

pub use spool_core::machines::video::view::video;
