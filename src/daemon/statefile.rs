//! The state a restarting xvsd hands to the next one (`--state-dir DIR`).
//!
//! Two files, each written to a temporary name, synced and renamed into place, so a reader
//! sees the old file or the new one, never half of one:
//!
//! - `config.json` ([`SavedConfig`]): the configuration as the control requests that rebuild
//!   it (`-A`, `-a` in the order that reproduces IPVS's server list, `--set`), applied by
//!   the next xvsd as one all-or-nothing batch. Requests rather than the model's own structs
//!   because they are the control protocol, which older and newer xvsadm already speak, so an
//!   upgrade reads them through the same validation as any `-R`. Rewritten after every
//!   change, so even a crashed xvsd restarts with its last configuration.
//! - `conns.sync`: the connection table at shutdown, as IPVS sync v1 datagrams
//!   (`crate::sync::wire`, one format for peers and for restarts) after an 16-byte header
//!   (magic, save time). The next xvsd applies them once and renames the file to
//!   `conns.sync.restored` (kept for a look, never read again), so a later crash does not
//!   bring back connections that ended since.

use crate::daemon::config::ConfigModel;
use crate::model::{DestSpec, Request};
use crate::sync::wire::{self, SyncConn, SyncWriter};
use crate::sync::SyncHooks;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CONFIG_FILE: &str = "config.json";
pub const CONNS_FILE: &str = "conns.sync";
/// What `conns.sync` becomes once applied.
pub const CONNS_RESTORED: &str = "conns.sync.restored";

/// `conns.sync` starts with this, then the save time (be64 Unix milliseconds).
const CONNS_MAGIC: &[u8; 8] = b"XVSCONN1";
const CONNS_HEADER_LEN: usize = 16;
/// Datagram size in the file: the largest the v1 header's 16-bit size allows, rounded down.
const FILE_MAXLEN: usize = 65000;
/// `config.json`'s `format`; a newer one is refused rather than half understood.
const CONFIG_FORMAT: u32 = 1;

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConfig {
    pub format: u32,
    /// The xvsd that wrote it (`CARGO_PKG_VERSION`), for the log.
    pub xvs_version: String,
    pub saved_at_unix_ms: u64,
    /// The interfaces it served, for the log (a different set is allowed).
    pub interfaces: Vec<String>,
    /// The requests that rebuild the configuration, in order.
    pub requests: Vec<Request>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The requests that rebuild `model` on an empty configuration: services in creation order,
/// each one's servers last first (an added server goes to the head of IPVS's list), then the
/// timeouts.
pub fn config_requests(model: &ConfigModel) -> Vec<Request> {
    let mut out = Vec::new();
    for s in &model.services {
        out.push(Request::AddService {
            key: s.key,
            opts: s.opts.clone(),
        });
        for d in s.dests.iter().rev() {
            out.push(Request::AddDest {
                service: s.key,
                dest: DestSpec {
                    addr: d.addr,
                    port: Some(d.port),
                    forward: d.forward,
                    weight: d.weight,
                    u_threshold: d.u_threshold,
                    l_threshold: d.l_threshold,
                },
            });
        }
    }
    out.push(Request::SetTimeouts(model.timeouts));
    out
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync,
/// rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Saves the configuration to `dir/config.json`.
pub fn save_config(dir: &Path, model: &ConfigModel, interfaces: &[String]) -> Result<()> {
    let saved = SavedConfig {
        format: CONFIG_FORMAT,
        xvs_version: env!("CARGO_PKG_VERSION").to_string(),
        saved_at_unix_ms: unix_ms(),
        interfaces: interfaces.to_vec(),
        requests: config_requests(model),
    };
    let json = serde_json::to_vec_pretty(&saved).context("encoding the configuration")?;
    write_atomic(&dir.join(CONFIG_FILE), &json)
}

/// Reads `dir/config.json`; `None` when there is none.
pub fn load_config(dir: &Path) -> Result<Option<SavedConfig>> {
    let path = dir.join(CONFIG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let saved: SavedConfig = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {} (saved configuration)", path.display()))?;
    if saved.format > CONFIG_FORMAT {
        bail!(
            "{}: format {} is newer than this xvsd understands ({CONFIG_FORMAT}); written by xvs {}",
            path.display(),
            saved.format,
            saved.xvs_version
        );
    }
    Ok(Some(saved))
}

/// What [`save_conns`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub conns: usize,
    pub datagrams: usize,
    /// Entries the encoder refused (IPv6 without support, one-packet), not saved.
    pub refused: usize,
}

/// Saves every connection and template `hooks` dumps to `path` as sync v1 datagrams.
pub fn save_conns(path: &Path, hooks: &dyn SyncHooks) -> Result<Saved> {
    let mut out = Vec::with_capacity(CONNS_HEADER_LEN);
    out.extend_from_slice(CONNS_MAGIC);
    out.extend_from_slice(&unix_ms().to_be_bytes());
    let mut w = SyncWriter::new(0, FILE_MAXLEN);
    let mut saved = Saved::default();
    hooks.dump(&mut |chunk: &[SyncConn]| {
        for c in chunk {
            match w.push(c) {
                Ok(done) => {
                    saved.conns += 1;
                    if let Some(d) = done {
                        out.extend_from_slice(&d);
                        saved.datagrams += 1;
                    }
                }
                Err(_) => saved.refused += 1,
            }
        }
    });
    if let Some(d) = w.flush() {
        out.extend_from_slice(&d);
        saved.datagrams += 1;
    }
    write_atomic(path, &out)?;
    Ok(saved)
}

/// What [`load_conns`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Entries handed to `hooks.apply` (which counts applied and refused itself).
    pub conns: usize,
    /// Entries whose timeout ran out while no xvsd ran, not applied.
    pub expired: usize,
    /// Entries the decoder skipped (IPv6, unknown protocol, bad state).
    pub skipped: usize,
    pub datagrams: usize,
    /// How long ago the file was written.
    pub age: Duration,
}

/// Applies the connections saved at `path` through `hooks.apply`, with their timeouts
/// shortened by the time since they were saved (those that ran out are dropped). A
/// damaged file applies the datagrams before the damage and is then an error.
pub fn load_conns(path: &Path, hooks: &dyn SyncHooks) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < CONNS_HEADER_LEN || &bytes[..8] != CONNS_MAGIC {
        bail!("{}: not an xvs connection state file", path.display());
    }
    let saved_ms = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let age = Duration::from_millis(unix_ms().saturating_sub(saved_ms));
    // Whole seconds that passed, rounded up: a connection never outlives its timeout.
    let gone = age.as_millis().div_ceil(1000).min(u32::MAX as u128) as u32;
    let mut loaded = Loaded {
        age,
        ..Default::default()
    };
    let mut at = CONNS_HEADER_LEN;
    let mut batch = Vec::new();
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < wire::MESG_HEADER_LEN {
            bail!("{}: truncated at byte {at}", path.display());
        }
        let size = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if size < wire::MESG_HEADER_LEN || size > rest.len() {
            bail!(
                "{}: bad datagram size {size} at byte {at} (file truncated?)",
                path.display()
            );
        }
        let d = wire::decode(&rest[..size], 0)
            .map_err(|e| anyhow::anyhow!("{}: datagram at byte {at}: {e}", path.display()))?;
        loaded.skipped += d.skipped.len();
        batch.clear();
        for mut c in d.conns {
            if c.timeout_s != 0 {
                if c.timeout_s <= gone {
                    loaded.expired += 1;
                    continue;
                }
                c.timeout_s -= gone;
            }
            batch.push(c);
        }
        loaded.conns += batch.len();
        hooks.apply(&batch);
        loaded.datagrams += 1;
        at += size;
    }
    Ok(loaded)
}

/// Renames an applied `conns.sync` out of the way (see the module docs).
pub fn retire_conns(dir: &Path) -> Result<PathBuf> {
    let to = dir.join(CONNS_RESTORED);
    std::fs::rename(dir.join(CONNS_FILE), &to)
        .with_context(|| format!("renaming {} after the restore", CONNS_FILE))?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    /// A table of connections: `dump` hands them out in chunks, `apply` collects.
    use crate::sync::SyncCounters;

    #[derive(Default)]
    struct Table {
        have: Vec<SyncConn>,
        got: Mutex<Vec<SyncConn>>,
        counters: SyncCounters,
    }

    impl SyncHooks for Table {
        fn drain(&self, _out: &mut Vec<SyncConn>) {}
        fn apply(&self, conns: &[SyncConn]) {
            self.got.lock().unwrap().extend_from_slice(conns);
        }
        fn dump(&self, each: &mut dyn FnMut(&[SyncConn])) {
            for c in self.have.chunks(100) {
                each(c);
            }
        }
        fn counters(&self) -> &SyncCounters {
            &self.counters
        }
    }

    fn conn(i: u32, timeout_s: u32) -> SyncConn {
        SyncConn {
            protocol: if i.is_multiple_of(3) {
                wire::IPPROTO_UDP
            } else {
                wire::IPPROTO_TCP
            },
            flags: wire::IP_VS_CONN_F_DROUTE,
            state: if i.is_multiple_of(3) {
                0
            } else {
                wire::IP_VS_TCP_S_ESTABLISHED
            },
            cport: (1024 + i % 60000) as u16,
            vport: 80,
            dport: 80,
            timeout_s,
            caddr: Ipv4Addr::from(0xc000_0200 + i),
            vaddr: Ipv4Addr::new(10, 0, 0, 88),
            daddr: Ipv4Addr::new(10, 0, 0, 9),
            ..Default::default()
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xvs-statefile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn conns_round_trip_over_many_datagrams() {
        let d = tmpdir("rt");
        let have: Vec<SyncConn> = (0..5000).map(|i| conn(i, 900)).collect();
        let t = Table {
            have: have.clone(),
            ..Default::default()
        };
        let saved = save_conns(&d.join(CONNS_FILE), &t).unwrap();
        assert_eq!(saved.conns, 5000);
        assert!(saved.datagrams > 1, "{saved:?}");
        let back = Table::default();
        let loaded = load_conns(&d.join(CONNS_FILE), &back).unwrap();
        assert_eq!(loaded.conns, 5000);
        assert_eq!(loaded.datagrams, saved.datagrams);
        let got = back.got.lock().unwrap();
        // Saved and read back within a second or two: the timeouts shrink by that much.
        for (g, h) in got.iter().zip(&have) {
            assert!(g.timeout_s <= h.timeout_s && g.timeout_s + 2 >= h.timeout_s);
            let mut g = g.clone();
            g.timeout_s = h.timeout_s;
            assert_eq!(&g, h);
        }
        assert_eq!(got.len(), have.len());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn conns_that_ran_out_while_stopped_are_dropped() {
        let d = tmpdir("age");
        let t = Table {
            have: vec![conn(1, 1), conn(2, 900), conn(3, 0)],
            ..Default::default()
        };
        save_conns(&d.join(CONNS_FILE), &t).unwrap();
        // Age the file by 10 s: rewrite the save time.
        let p = d.join(CONNS_FILE);
        let mut b = std::fs::read(&p).unwrap();
        let then = unix_ms() - 10_000;
        b[8..16].copy_from_slice(&then.to_be_bytes());
        std::fs::write(&p, &b).unwrap();
        let back = Table::default();
        let l = load_conns(&p, &back).unwrap();
        assert_eq!((l.conns, l.expired), (2, 1));
        let got = back.got.lock().unwrap();
        assert!(
            (889..=890).contains(&got[0].timeout_s),
            "{}",
            got[0].timeout_s
        );
        // 0 = "the state's own timeout": left as is.
        assert_eq!(got[1].timeout_s, 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn damaged_conns_files_are_errors() {
        let d = tmpdir("bad");
        let p = d.join(CONNS_FILE);
        std::fs::write(&p, b"not a state file").unwrap();
        assert!(load_conns(&p, &Table::default()).is_err());
        let t = Table {
            have: (0..10).map(|i| conn(i, 900)).collect(),
            ..Default::default()
        };
        save_conns(&p, &t).unwrap();
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 5]).unwrap();
        let e = load_conns(&p, &Table::default()).unwrap_err().to_string();
        assert!(e.contains("truncated") || e.contains("size"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn config_round_trip_keeps_order_and_timeouts() {
        let key = |port| ServiceKey {
            proto: Protocol::Tcp,
            addr: Ipv4Addr::new(10, 0, 0, 88),
            port,
        };
        let mut m = ConfigModel::default();
        let mut reqs = vec![
            Request::AddService {
                key: key(80),
                opts: ServiceOpts {
                    scheduler: "wrr".into(),
                    ..Default::default()
                },
            },
            Request::AddService {
                key: key(443),
                opts: ServiceOpts {
                    persistent: Some(300),
                    ..Default::default()
                },
            },
            Request::SetTimeouts(Timeouts {
                tcp: 60,
                tcp_fin: 10,
                udp: 30,
            }),
        ];
        for (i, a) in [9u8, 20, 21].iter().enumerate() {
            reqs.push(Request::AddDest {
                service: key(80),
                dest: DestSpec {
                    addr: Ipv4Addr::new(10, 0, 0, *a),
                    port: None,
                    forward: Forward::Route,
                    weight: i as u32 + 1,
                    u_threshold: 10,
                    l_threshold: 5,
                },
            });
        }
        m.apply(&Request::Batch(reqs)).unwrap();
        let d = tmpdir("cfg");
        save_config(&d, &m, &["eth0".to_string()]).unwrap();
        let saved = load_config(&d).unwrap().unwrap();
        assert_eq!(saved.interfaces, vec!["eth0".to_string()]);
        let mut back = ConfigModel::default();
        back.apply(&Request::Batch(saved.requests)).unwrap();
        assert_eq!(back, m);
        assert!(load_config(&tmpdir("none")).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }
}
