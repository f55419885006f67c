fn main() -> Result<(), Box<dyn std::error::Error>> {
    // etcd's client, generated from the few messages the etcd comparison needs (proto/etcd.proto),
    // with the vendored protoc shoal-proto uses (no system protobuf-compiler needed).
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(false).compile_with_config(
        config,
        &["proto/etcd.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
