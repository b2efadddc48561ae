//! `purelb-lab`: the lab from the command line, for `make images` and `make demo`.
//!
//! ```text
//! purelb-lab images --bin-dir DIR --labpod FILE --out DIR
//!     writes the OCI archives of the allocator, lbnodeagent, the lab's pause
//!     and web images
//! purelb-lab demo [--state-dir DIR]
//!     starts the lab's cluster in the background (stopping a running one
//!     first), installs PureLB from deploy/, creates a local and a remote
//!     Service in front of a web Deployment, and shows what came of it
//! purelb-lab down [--state-dir DIR]
//!     stops the cluster `demo` started and removes everything it made
//! ```
//!
//! The demo's cluster lives in a background `purelb-lab serve` process; its
//! state (pid, log, kubeconfig, what to look at) is in the state directory,
//! `/var/tmp/purelb-demo` unless `--state-dir` says otherwise.

mod demo;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use testbed::cluster::image::{Capability, ImageFile, ImageSpec, write_oci_archive};
use testbed::cluster::workload::WEB_IMAGE;

/// The images PureLB's manifests name.
const ALLOCATOR_IMAGE: &str = "localhost/purelb/allocator:0.1.0";
const AGENT_IMAGE: &str = "localhost/purelb/lbnodeagent:0.1.0";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("purelb-lab: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("images") => images(&args[1..]),
        Some(cmd @ ("demo" | "serve" | "down")) => {
            let state = match args.get(1).map(String::as_str) {
                None => PathBuf::from(demo::DEFAULT_STATE_DIR),
                Some("--state-dir") => {
                    PathBuf::from(args.get(2).context("flag --state-dir needs a value")?)
                }
                Some(flag) => bail!("unknown flag {flag:?} for {cmd} (flags: --state-dir)"),
            };
            match cmd {
                "demo" => demo::demo(&state),
                "serve" => demo::serve(&state),
                _ => demo::down(&state),
            }
        }
        Some(other) => bail!("unknown command {other:?} (commands: images, demo, down)"),
        None => bail!("usage: purelb-lab images|demo|down [flags]"),
    }
}

/// `--name value` pairs; every flag is required.
fn flags<const N: usize>(args: &[String], names: [&str; N]) -> Result<[String; N]> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let i = names
            .iter()
            .position(|n| flag == &format!("--{n}"))
            .with_context(|| format!("unknown flag {flag:?} (flags: --{})", names.join(", --")))?;
        values[i] = Some(
            it.next()
                .with_context(|| format!("flag {flag} needs a value"))?
                .clone(),
        );
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (i, v) in values.into_iter().enumerate() {
        out[i] = v.with_context(|| format!("flag --{} is required", names[i]))?;
    }
    Ok(out)
}

fn images(args: &[String]) -> Result<()> {
    let [bin_dir, labpod, out] = flags(args, ["bin-dir", "labpod", "out"])?;
    let (bin_dir, labpod, out) = (
        PathBuf::from(bin_dir),
        PathBuf::from(labpod),
        PathBuf::from(out),
    );
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let nobody = Some("65534:65534".to_owned());
    let specs = [
        (
            "allocator.tar",
            ImageSpec {
                name: ALLOCATOR_IMAGE.into(),
                files: vec![ImageFile::executable(
                    "/usr/local/bin/allocator",
                    &bin_dir.join("allocator"),
                )?],
                entrypoint: vec!["/usr/local/bin/allocator".into()],
                user: nobody.clone(),
                exposed_ports: vec![7472],
            },
        ),
        (
            "lbnodeagent.tar",
            ImageSpec {
                name: AGENT_IMAGE.into(),
                files: vec![
                    ImageFile::executable(
                        "/usr/local/bin/lbnodeagent",
                        &bin_dir.join("lbnodeagent"),
                    )?
                    .with_capabilities(&[
                        Capability::NetAdmin,
                        Capability::NetRaw,
                        Capability::NetBindService,
                    ]),
                ],
                entrypoint: vec!["/usr/local/bin/lbnodeagent".into()],
                user: nobody.clone(),
                exposed_ports: vec![7472, 179],
            },
        ),
        (
            "pause.tar",
            ImageSpec {
                name: testbed::cluster::PAUSE_IMAGE.into(),
                files: vec![ImageFile::executable("/labpod", &labpod)?],
                entrypoint: vec!["/labpod".into(), "pause".into()],
                user: nobody.clone(),
                exposed_ports: vec![],
            },
        ),
        (
            "web.tar",
            ImageSpec {
                name: WEB_IMAGE.into(),
                files: vec![ImageFile::executable("/labpod", &labpod)?],
                entrypoint: vec!["/labpod".into(), "web".into()],
                user: nobody,
                exposed_ports: vec![8080],
            },
        ),
    ];
    for (file, spec) in &specs {
        let path = out.join(file);
        write_oci_archive(spec, &path)?;
        println!("{} -> {}", spec.name, path.display());
    }
    Ok(())
}
