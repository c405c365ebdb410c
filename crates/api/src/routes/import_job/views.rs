//! The JSON of an import job and its pages (contract §2.3, §6.1), rendered by the machine.

pub use spool_core::machines::import_job::view::{
    EMBEDDED_PAGE_ITEMS, files_page, import_job, outputs_page, outputs_videos, own_files,
};
