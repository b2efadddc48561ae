//! OCI image archives written without Docker or a registry: one uncompressed
//! layer, a config, a manifest and an index, packed as the tar that
//! `ctr images import` (and `docker load`, `skopeo`, `podman load`) read.
//!
//! File capabilities travel in the layer as a PAX `SCHILY.xattr.security.capability`
//! record, which containerd's unpacker turns back into the file's xattr.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The capabilities a file can carry (bit numbers from linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    NetBindService = 10,
    NetAdmin = 12,
    NetRaw = 13,
}

/// A file in the image.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Absolute path in the image, e.g. `/usr/local/bin/lbnodeagent`.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// File capabilities, permitted and effective.
    pub capabilities: Vec<Capability>,
}

impl ImageFile {
    /// An executable read from `source`.
    pub fn executable(path: &str, source: &Path) -> Result<ImageFile> {
        Ok(ImageFile {
            path: path.to_owned(),
            contents: std::fs::read(source)
                .with_context(|| format!("reading {}", source.display()))?,
            mode: 0o755,
            capabilities: Vec::new(),
        })
    }

    pub fn with_capabilities(mut self, caps: &[Capability]) -> ImageFile {
        self.capabilities = caps.to_vec();
        self
    }
}

/// What an image is: its name, files and how it runs.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The reference it is imported as, e.g. `localhost/purelb/allocator:0.1.0`.
    pub name: String,
    pub files: Vec<ImageFile>,
    pub entrypoint: Vec<String>,
    /// `uid:gid`, or `None` for root.
    pub user: Option<String>,
    pub exposed_ports: Vec<u16>,
}

/// The `security.capability` xattr value (VFS_CAP_REVISION_2, effective).
fn capability_xattr(caps: &[Capability]) -> Vec<u8> {
    const REVISION_2: u32 = 0x0200_0000;
    const FLAG_EFFECTIVE: u32 = 0x1;
    let permitted: u64 = caps.iter().fold(0, |bits, c| bits | 1 << *c as u32);
    let mut value = Vec::with_capacity(20);
    value.extend((REVISION_2 | FLAG_EFFECTIVE).to_le_bytes());
    value.extend((permitted as u32).to_le_bytes()); // permitted, low word
    value.extend(0u32.to_le_bytes()); // inheritable, low word
    value.extend(((permitted >> 32) as u32).to_le_bytes());
    value.extend(0u32.to_le_bytes());
    value
}

/// The layer: every directory on the way to each file, the files, and an
/// `/etc/passwd` naming root and nobody, deterministic (mtime 0, sorted).
fn layer(files: &[ImageFile]) -> Result<Vec<u8>> {
    let mut dirs = std::collections::BTreeSet::from(["etc".to_owned(), "tmp".to_owned()]);
    for f in files {
        let rel = f.path.trim_start_matches('/');
        let mut parent = Path::new(rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    let passwd = ImageFile {
        path: "/etc/passwd".into(),
        contents: b"root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
            .to_vec(),
        mode: 0o644,
        capabilities: Vec::new(),
    };
    let mut all: Vec<&ImageFile> = files.iter().chain([&passwd]).collect();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    for f in all {
        if !f.capabilities.is_empty() {
            let value = capability_xattr(&f.capabilities);
            tar.append_pax_extensions([("SCHILY.xattr.security.capability", value.as_slice())])?;
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(f.mode);
        header.set_size(f.contents.len() as u64);
        header.set_mtime(0);
        tar.append_data(
            &mut header,
            f.path.trim_start_matches('/'),
            f.contents.as_slice(),
        )?;
    }
    Ok(tar.into_inner()?)
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Writes `spec` as an OCI image archive at `out`; returns the manifest's digest.
pub fn write_oci_archive(spec: &ImageSpec, out: &Path) -> Result<String> {
    let layer = layer(&spec.files)?;
    let layer_digest = digest(&layer);
    let ports: serde_json::Map<String, serde_json::Value> = spec
        .exposed_ports
        .iter()
        .map(|p| (format!("{p}/tcp"), json!({})))
        .collect();
    let mut config = json!({
        "Entrypoint": spec.entrypoint,
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "ExposedPorts": ports,
        "WorkingDir": "/",
    });
    if let Some(user) = &spec.user {
        config["User"] = user.clone().into();
    }
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "testbed image writer" }],
    }))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = digest(&manifest);
    let tag = spec.name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for (d, data) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        add(&format!("blobs/sha256/{}", &d["sha256:".len()..]), data)?;
    }
    tar.into_inner()?.flush()?;
    Ok(manifest_digest)
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn capability_xattr_has_the_kernel_layout() {
        let value = capability_xattr(&[
            Capability::NetAdmin,
            Capability::NetRaw,
            Capability::NetBindService,
        ]);
        assert_eq!(
            value,
            [
                0x01, 0, 0, 0x02, 0x00, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn the_archive_carries_the_file_capabilities_and_names_the_image() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("image.tar");
        let spec = ImageSpec {
            name: "localhost/test/agent:1".into(),
            files: vec![ImageFile {
                path: "/usr/local/bin/agent".into(),
                contents: b"#!binary".to_vec(),
                mode: 0o755,
                capabilities: vec![Capability::NetAdmin],
            }],
            entrypoint: vec!["/usr/local/bin/agent".into()],
            user: Some("65534:65534".into()),
            exposed_ports: vec![7472],
        };
        write_oci_archive(&spec, &out)?;

        let mut archive = tar::Archive::new(std::fs::File::open(&out)?);
        let mut index = None;
        let mut layers = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            if path == "index.json" {
                index = Some(serde_json::from_slice::<serde_json::Value>(&data)?);
            } else if path.starts_with("blobs/") && data.starts_with(b"etc/") {
                layers.push(data);
            }
        }
        let index = index.context("no index.json")?;
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "localhost/test/agent:1"
        );
        let layer = layers.first().context("no layer blob")?;
        let mut layer = tar::Archive::new(layer.as_slice());
        let mut caps = None;
        for entry in layer.entries()? {
            let mut entry = entry?;
            if entry.path()?.to_string_lossy() == "usr/local/bin/agent" {
                for ext in entry.pax_extensions()?.context("no PAX records")? {
                    let ext = ext?;
                    if ext.key()? == "SCHILY.xattr.security.capability" {
                        caps = Some(ext.value_bytes().to_vec());
                    }
                }
            }
        }
        assert_eq!(caps, Some(capability_xattr(&[Capability::NetAdmin])));
        Ok(())
    }
}
