//! What can be checked of agentdeck's image and manifests on a machine with no container
//! engine: the Containerfile and `config/kubernetes/deployment.yaml` agree (image, user, port,
//! command), every file the build copies exists, and the binary needs nothing more than the
//! runtime image (Debian 12 slim) has: its glibc symbol versions and its shared libraries.

use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    let at = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()))
}

/// glibc of Debian 12 (bookworm), the runtime image's base.
const RUNTIME_GLIBC: (u32, u32) = (2, 36);
/// What debian:bookworm-slim has of the libraries a Rust binary links (libc6, libgcc-s1).
const RUNTIME_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

#[test]
fn the_containerfile_and_the_deployment_agree() {
    let containerfile = read("Containerfile");
    let deployment = read("config/kubernetes/deployment.yaml");
    let readme = read("README.md");
    let image = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("an image in the deployment");
    assert!(
        containerfile.contains(&format!("-t {image} ")),
        "the Containerfile says how to build {image}"
    );
    assert!(
        readme.contains(&format!("-t {image} ")),
        "README says how to build {image}"
    );
    assert!(containerfile.contains("USER 10001"), "non-root");
    assert!(deployment.contains("runAsUser: 10001"));
    assert!(deployment.contains("runAsNonRoot: true"));
    assert!(containerfile.contains("EXPOSE 3000"));
    assert!(deployment.contains("containerPort: 3000"));
    assert!(deployment.contains(r#"listen = "0.0.0.0:3000""#));
    assert!(containerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/agentdeck"]"#));
    assert!(deployment.contains(r#"args: ["serve"]"#));
    // Both stages on Debian 12: the binary runs on the glibc it was built against.
    let froms: Vec<&str> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms.iter().all(|f| f.contains("bookworm")), "{froms:?}");
    // Everything the build stage copies is in the repository.
    for line in containerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
                "the Containerfile copies {source}, which is not there"
            );
        }
    }
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is needed for this test (apt-get install binutils): {e}")
    });
    assert!(out.status.success(), "{name} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_binary_runs_on_the_runtime_images_libc() {
    let binary = env!("CARGO_BIN_EXE_agentdeck");
    let symbols = tool("objdump", &["-T", binary]);
    let newest = symbols
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.').filter_map(|p| p.parse::<u32>().ok());
            Some((parts.next()?, parts.next().unwrap_or(0)))
        })
        .max()
        .expect("glibc symbol versions");
    assert!(
        newest <= RUNTIME_GLIBC,
        "the binary needs glibc {newest:?}; Debian 12 slim has {RUNTIME_GLIBC:?}"
    );
    let dynamic = tool("readelf", &["-d", binary]);
    for needed in dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
    {
        assert!(
            RUNTIME_LIBS.contains(&needed),
            "the binary needs {needed}, which debian:bookworm-slim does not have"
        );
    }
}
