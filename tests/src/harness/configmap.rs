//! A config file laid out as a Kubernetes ConfigMap volume mounts it, and
//! updated as the kubelet's atomic writer does.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// `DIR/NAME` -> `..data/NAME`, `..data` -> `..<stamp>` holding `NAME`.
pub struct ConfigMapMount {
    dir: PathBuf,
    name: String,
    /// The timestamped directory `..data` points to now.
    current: String,
    updates: u32,
}

impl ConfigMapMount {
    /// Replaces the file at `path` (whose directory becomes the mount) by
    /// the ConfigMap layout, holding `toml`.
    pub fn create(path: &Path, toml: &str) -> Result<ConfigMapMount> {
        let dir = path.parent().context("the config has no directory")?;
        let name = path
            .file_name()
            .context("the config has no file name")?
            .to_string_lossy()
            .into_owned();
        let mut mount = ConfigMapMount {
            dir: dir.to_owned(),
            name: name.clone(),
            current: String::new(),
            updates: 0,
        };
        mount.current = mount.write_stamped(toml)?;
        symlink(&mount.current, dir.join("..data"))?;
        let _ = std::fs::remove_file(path);
        symlink(format!("..data/{name}"), path)
            .with_context(|| format!("cannot link {}", path.display()))?;
        Ok(mount)
    }

    /// A new timestamped directory holding `toml`; returns its name.
    fn write_stamped(&mut self, toml: &str) -> Result<String> {
        self.updates += 1;
        let stamp = format!("..2026_12_06_04_00_{:02}.{}", self.updates, self.updates);
        let stamped = self.dir.join(&stamp);
        std::fs::create_dir(&stamped)?;
        std::fs::write(stamped.join(&self.name), toml)?;
        Ok(stamp)
    }

    /// The kubelet's update: a new timestamped directory, a `..data_tmp`
    /// symlink to it renamed over `..data`, the old directory removed.
    pub fn update(&mut self, toml: &str) -> Result<()> {
        let stamp = self.write_stamped(toml)?;
        let tmp = self.dir.join("..data_tmp");
        symlink(&stamp, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        let old = std::mem::replace(&mut self.current, stamp);
        std::fs::remove_dir_all(self.dir.join(old))?;
        Ok(())
    }
}
