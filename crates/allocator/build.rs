//! Generates the external-IPAM gRPC code (client and server) from
//! `proto/purelb/ipam/v1/ipam.proto`. The .proto is parsed by `protox`, a
//! pure-Rust protobuf compiler, so no `protoc` binary is needed.

use std::error::Error;

const PROTO: &str = "proto/purelb/ipam/v1/ipam.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
