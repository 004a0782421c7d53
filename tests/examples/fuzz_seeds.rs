//! Writes the fuzz targets' seed corpus (`vmm_tests::fuzz::seeds`) to
//! `fuzz/corpus/<target>/seed-<name>`. Run after changing the seeds:
//! `cargo run -p vmm-tests --example fuzz_seeds`.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, name, bytes) in vmm_tests::fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus folder");
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).expect("write a seed");
        println!("{}", path.display());
    }
}
