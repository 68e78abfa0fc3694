//! The gRPC contract of dirac-rs, generated from `proto/` at build time.
//!
//! No logic lives here: one module per proto package (`dirac::wms::v1`, ...),
//! plus the encoded descriptor set that servers publish through reflection.
//! Start from the `.proto` files under `proto/dirac/`.

#![allow(clippy::all, clippy::pedantic)]

/// Encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dirac_descriptor.bin"));

pub mod dirac {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("dirac.common.v1");
        }
    }
    pub mod wms {
        pub mod v1 {
            tonic::include_proto!("dirac.wms.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("dirac.auth.v1");
        }
    }
    pub mod dms {
        pub mod v1 {
            tonic::include_proto!("dirac.dms.v1");
        }
    }
    pub mod rms {
        pub mod v1 {
            tonic::include_proto!("dirac.rms.v1");
        }
    }
}

pub use dirac::auth::v1 as auth;
pub use dirac::common::v1 as common;
pub use dirac::dms::v1 as dms;
pub use dirac::rms::v1 as rms;
pub use dirac::wms::v1 as wms;
