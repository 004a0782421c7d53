//! Makes the `--image` tests' container images in a directory, to try
//! `vmm run --image` and `vmm bench --image` by hand:
//!
//! ```sh
//! cargo run -p vmm-tests --example test_images -- /tmp/images
//! vmm run --image /tmp/images/oci:two
//! ```

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: test_images DIR");
        std::process::exit(2);
    };
    let missing = vmm_tests::images::missing_tools();
    if !missing.is_empty() {
        eprintln!(
            "test_images: needs {} (scripts/setup.sh installs them)",
            missing.join(", ")
        );
        std::process::exit(1);
    }
    match vmm_tests::images::build(std::path::Path::new(&dir)) {
        Ok(images) => {
            println!("{}", images.two_layers());
            println!("{}", images.archive_ref());
        }
        Err(e) => {
            eprintln!("test_images: {e}");
            std::process::exit(1);
        }
    }
}
