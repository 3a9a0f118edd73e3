//! The image `make image` writes (scripts/image, no Docker) against the Dockerfile's final
//! stage: the same user, entrypoint, ports and binary paths, CA certificates, the shared
//! libraries the binaries need, and nothing of a distribution beyond them.

use std::collections::BTreeSet;
use testkit::oci::Image;
use testkit::process::root;

/// What the Dockerfile's last stage sets.
struct FinalStage {
    user: String,
    entrypoint: Vec<String>,
    expose: BTreeSet<String>,
    binaries: Vec<String>,
}

fn final_stage() -> FinalStage {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let last = text.rsplit_once("\nFROM ").map(|(_, s)| s).expect("a FROM line");
    let mut stage = FinalStage { user: String::new(), entrypoint: vec![], expose: BTreeSet::new(), binaries: vec![] };
    for line in last.lines() {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "USER" => stage.user = rest.trim().to_string(),
            "ENTRYPOINT" => stage.entrypoint = serde_json::from_str(rest.trim()).expect("ENTRYPOINT in JSON form"),
            "EXPOSE" => stage.expose = rest.split_whitespace().map(|p| format!("{p}/tcp")).collect(),
            "COPY" => {
                let parts: Vec<&str> = rest.split_whitespace().filter(|p| !p.starts_with("--")).collect();
                let (dest, sources) = parts.split_last().unwrap();
                for s in sources {
                    let file = s.rsplit('/').next().unwrap();
                    stage.binaries.push(format!("{}{file}", dest.trim_start_matches('/')));
                }
            }
            _ => {}
        }
    }
    stage
}

#[test]
fn the_built_image_matches_the_dockerfiles_final_stage() {
    let path = root().join("target/image/webhook-relay.tar");
    let image = Image::open(&path).unwrap_or_else(|e| panic!("{e}: run `make image` (make test builds it)"));
    let stage = final_stage();
    assert_eq!(image.name, "localhost/webhook-relay:dev");
    let cfg = &image.config["config"];
    assert_eq!(cfg["User"].as_str(), Some(stage.user.as_str()), "USER");
    assert_eq!(stage.user, "65532:65532");
    let entrypoint: Vec<String> = serde_json::from_value(cfg["Entrypoint"].clone()).unwrap();
    assert_eq!(entrypoint, stage.entrypoint, "ENTRYPOINT");
    let exposed: BTreeSet<String> = cfg["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(exposed, stage.expose, "EXPOSE");
    assert_eq!(stage.binaries, ["usr/local/bin/webhook-relay", "usr/local/bin/webhook-relay-operator"]);
    for bin in &stage.binaries {
        let e = image.files.get(bin).unwrap_or_else(|| panic!("{bin} not in the image"));
        assert_eq!(e.mode & 0o111, 0o111, "{bin} is not executable");
    }
    assert!(image.files.contains_key("etc/ssl/certs/ca-certificates.crt"), "CA certificates");
    let passwd = image.files.keys().any(|p| p == "etc/passwd");
    assert!(passwd, "a passwd naming the nonroot user");
    // The dynamic loader and libc, and no shell or package manager.
    assert!(image.files.keys().any(|p| p.contains("ld-linux-x86-64.so")), "no dynamic loader");
    assert!(image.files.keys().any(|p| p.contains("libc.so")), "no libc");
    for absent in ["bin/sh", "bin/bash", "usr/bin/apt", "usr/bin/dpkg"] {
        assert!(!image.files.contains_key(absent), "{absent} in the image");
    }
    let total: u64 = image.files.values().map(|e| e.size).sum();
    println!(
        "{}: {} files, {:.1} MiB; user {}, entrypoint {:?}, ports {:?}",
        image.name,
        image.files.len(),
        total as f64 / 1048576.0,
        stage.user,
        stage.entrypoint,
        stage.expose
    );
}
