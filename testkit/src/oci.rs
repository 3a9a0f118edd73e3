//! Reading the OCI image archives `scripts/image` writes (an index, a manifest, a config and
//! uncompressed tar layers), for tests that check what an image holds.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One file of an image's layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// `0` file, `5` directory, `2` symlink (tar type flags).
    pub kind: u8,
}

/// An image archive, read.
pub struct Image {
    /// The `io.containerd.image.name` of its index.
    pub name: String,
    /// The image config (`config.User`, `config.Entrypoint`, ...).
    pub config: Value,
    /// Every path in its layers (without a leading `/`), and what it is.
    pub files: BTreeMap<String, Entry>,
}

fn tar_entries(data: &[u8]) -> Vec<(String, Entry, &[u8])> {
    let mut out = vec![];
    let mut at = 0;
    while at + 512 <= data.len() {
        let h = &data[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let text = |r: std::ops::Range<usize>| {
            let s = &h[r];
            String::from_utf8_lossy(&s[..s.iter().position(|b| *b == 0).unwrap_or(s.len())]).into_owned()
        };
        let octal = |r: std::ops::Range<usize>| u64::from_str_radix(text(r).trim(), 8).unwrap_or(0);
        let (name, prefix) = (text(0..100), text(345..500));
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let size = octal(124..136);
        let entry = Entry {
            mode: octal(100..108) as u32,
            uid: octal(108..116) as u32,
            gid: octal(116..124) as u32,
            size,
            kind: h[156],
        };
        let body = &data[at + 512..(at + 512 + size as usize).min(data.len())];
        out.push((
            path.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/').to_string(),
            entry,
            body,
        ));
        at += 512 + (size as usize).div_ceil(512) * 512;
    }
    out
}

impl Image {
    /// Reads the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let outer: BTreeMap<String, &[u8]> = tar_entries(&data).into_iter().map(|(p, _, b)| (p, b)).collect();
        let json = |name: &str| -> Result<Value, String> {
            let bytes = outer.get(name).ok_or_else(|| format!("{name} missing from {}", path.display()))?;
            serde_json::from_slice(bytes).map_err(|e| format!("{name}: {e}"))
        };
        let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        let index = json("index.json")?;
        let m = &index["manifests"][0];
        let name = m["annotations"]["io.containerd.image.name"].as_str().unwrap_or_default().to_string();
        let manifest = json(&blob(m["digest"].as_str().unwrap_or_default()))?;
        let config = json(&blob(manifest["config"]["digest"].as_str().unwrap_or_default()))?;
        let mut files = BTreeMap::new();
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let digest = layer["digest"].as_str().unwrap_or_default();
            let bytes = outer.get(&blob(digest)).ok_or_else(|| format!("layer {digest} missing"))?;
            for (p, e, _) in tar_entries(bytes) {
                files.insert(p, e);
            }
        }
        Ok(Image { name, config, files })
    }
}
