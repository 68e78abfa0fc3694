//! Writes the CRDs of `dirac-operator` into `k8s/crds/` and the chart's
//! `charts/dirac/crds/` (or into the directories given as arguments).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut dirs: Vec<std::path::PathBuf> = std::env::args()
        .skip(1)
        .map(std::path::PathBuf::from)
        .collect();
    if dirs.is_empty() {
        dirs = dirac_operator::CRD_DIRS
            .iter()
            .map(|d| root.join(d))
            .collect();
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in dirac_operator::crds() {
            std::fs::write(dir.join(name), yaml)?;
            println!("{}", dir.join(name).display());
        }
    }
    Ok(())
}
