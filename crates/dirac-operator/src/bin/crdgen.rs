//! Writes the CRDs of `dirac-operator` into `k8s/crds/` (or the directory
//! given as the first argument).

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/crds"));
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in dirac_operator::crds() {
        std::fs::write(dir.join(name), yaml)?;
        println!("{}", dir.join(name).display());
    }
    Ok(())
}
