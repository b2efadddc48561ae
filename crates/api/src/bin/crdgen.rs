//! Writes the CRDs generated from the Rust types to `deploy/crds/` (or the directory
//! given as the only argument).

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in purelb_api::crd::all()? {
        let path = dir.join(purelb_api::crd::file_name(&crd));
        std::fs::write(&path, purelb_api::crd::to_yaml(&crd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
