//! The configuration model: services and real servers as the operator configured them.
//!
//! Pure data plus validation: `apply` either changes the model and returns `Ok`, or returns an
//! ipvsadm-style message and leaves the model untouched. The daemon then reconciles the
//! runtime (`super::state`) with the new model.

use crate::model::*;
use crate::sched::{self, SchedError};
use std::net::Ipv4Addr;

/// A configured real server, port already resolved (IPVS forces DR/TUN ports to the service's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestConf {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub forward: Forward,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConf {
    pub key: ServiceKey,
    pub opts: ServiceOpts,
    /// IPVS list order: a new server goes to the head (`list_add_rcu` onto the list head).
    pub dests: Vec<DestConf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigModel {
    /// In creation order.
    pub services: Vec<ServiceConf>,
    pub timeouts: Timeouts,
}

fn check_service_opts(key: &ServiceKey, o: &ServiceOpts) -> Result<(), String> {
    match sched::by_name(&o.scheduler) {
        Ok(_) => {}
        Err(SchedError::Unknown(n)) => {
            return Err(format!("Scheduler not found: ip_vs_{n}.ko"));
        }
    }
    if let Some(m) = o.netmask {
        // A netmask must be contiguous ones then zeros.
        let v = u32::from(m);
        if v.leading_ones() + v.trailing_zeros() != 32 {
            return Err("Illegal virtual server netmask specified".into());
        }
    }
    sched::SchedFlags::parse(&o.sched_flags)?;
    if o.one_packet {
        return Err("One-packet scheduling (-o) is not implemented in xvs yet".into());
    }
    if key.port == 0 && o.persistent.is_none() {
        // IPVS accepts port 0 only for persistent services ("all ports").
        return Err("Zero port specified for non-persistent service".into());
    }
    Ok(())
}

fn check_thresholds(u: u32, l: u32) -> Result<(), String> {
    if u != 0 && l > u {
        return Err("Lower threshold is higher than upper threshold".into());
    }
    Ok(())
}

impl ConfigModel {
    fn find(&self, key: &ServiceKey) -> Option<usize> {
        self.services.iter().position(|s| s.key == *key)
    }

    fn svc_mut(&mut self, key: &ServiceKey) -> Result<&mut ServiceConf, String> {
        let i = self.find(key).ok_or("No such service")?;
        Ok(&mut self.services[i])
    }

    /// Applies one request. On error the model is unchanged.
    pub fn apply(&mut self, req: &Request) -> Result<(), String> {
        match req {
            Request::Batch(reqs) => {
                let mut next = self.clone();
                for (i, r) in reqs.iter().enumerate() {
                    next.apply(r)
                        .map_err(|e| format!("{e} (restore line {}: nothing applied)", i + 1))?;
                }
                *self = next;
                Ok(())
            }
            Request::AddService { key, opts } => {
                check_service_opts(key, opts)?;
                if self.find(key).is_some() {
                    return Err("Service already exists".into());
                }
                self.services.push(ServiceConf {
                    key: *key,
                    opts: opts.clone(),
                    dests: Vec::new(),
                });
                Ok(())
            }
            Request::EditService { key, opts } => {
                check_service_opts(key, opts)?;
                self.svc_mut(key)?.opts = opts.clone();
                Ok(())
            }
            Request::DeleteService { key } => {
                let i = self.find(key).ok_or("No such service")?;
                self.services.remove(i);
                Ok(())
            }
            Request::Clear => {
                self.services.clear();
                Ok(())
            }
            Request::AddDest { service, dest } => {
                check_thresholds(dest.u_threshold, dest.l_threshold)?;
                if dest.weight > MAX_WEIGHT {
                    return Err("Illegal weight specified".into());
                }
                let svc = self.svc_mut(service)?;
                let port = resolve_port(svc.key, dest.forward, dest.port);
                if svc
                    .dests
                    .iter()
                    .any(|d| d.addr == dest.addr && d.port == port)
                {
                    return Err("Destination already exists".into());
                }
                svc.dests.insert(
                    0,
                    DestConf {
                        addr: dest.addr,
                        port,
                        forward: dest.forward,
                        weight: dest.weight,
                        u_threshold: dest.u_threshold,
                        l_threshold: dest.l_threshold,
                    },
                );
                Ok(())
            }
            Request::EditDest { service, dest } => {
                if dest.weight.is_some_and(|w| w > MAX_WEIGHT) {
                    return Err("Illegal weight specified".into());
                }
                let svc = self.svc_mut(service)?;
                let key = svc.key;
                let d = find_dest(svc, dest.addr, dest.port)?;
                let mut next = d.clone();
                if let Some(f) = dest.forward {
                    next.forward = f;
                    next.port = resolve_port(key, f, dest.port.or(Some(next.port)));
                }
                if let Some(w) = dest.weight {
                    next.weight = w;
                }
                if let Some(u) = dest.u_threshold {
                    next.u_threshold = u;
                }
                if let Some(l) = dest.l_threshold {
                    next.l_threshold = l;
                }
                check_thresholds(next.u_threshold, next.l_threshold)?;
                *d = next;
                Ok(())
            }
            Request::DeleteDest {
                service,
                addr,
                port,
            } => {
                let svc = self.svc_mut(service)?;
                let (a, p) = {
                    let d = find_dest(svc, *addr, *port)?;
                    (d.addr, d.port)
                };
                svc.dests.retain(|d| !(d.addr == a && d.port == p));
                Ok(())
            }
            Request::SetTimeouts(t) => {
                // ipvsadm --set: 0 leaves that timeout unchanged.
                if t.tcp != 0 {
                    self.timeouts.tcp = t.tcp;
                }
                if t.tcp_fin != 0 {
                    self.timeouts.tcp_fin = t.tcp_fin;
                }
                if t.udp != 0 {
                    self.timeouts.udp = t.udp;
                }
                Ok(())
            }
            Request::Zero { service } => {
                if let Some(k) = service {
                    self.find(k).ok_or("No such service")?;
                }
                Ok(())
            }
            Request::DataPath
            | Request::Connections
            | Request::Health
            | Request::Daemons
            | Request::Reload
            | Request::Announce { .. } => Ok(()),
            // The control socket runs these itself; only a -R batch brings them here, and a
            // batch is all or nothing, which starting threads and sockets cannot promise.
            Request::StartDaemon { .. } | Request::StopDaemon { .. } => {
                Err("--start-daemon and --stop-daemon cannot be part of a restore".into())
            }
            Request::Status { service } => {
                if let Some(k) = service {
                    self.find(k).ok_or("No such service")?;
                }
                Ok(())
            }
        }
    }
}

/// IPVS: for DR and TUN the real port is the service port whatever was given; for NAT an
/// omitted port means the service port.
fn resolve_port(svc: ServiceKey, f: Forward, port: Option<u16>) -> u16 {
    match f {
        Forward::Masq => port.unwrap_or(svc.port),
        Forward::Route | Forward::Tunnel => svc.port,
    }
}

/// Finds a server by address and (optional) port; without a port the address must be unique.
fn find_dest(
    svc: &mut ServiceConf,
    addr: Ipv4Addr,
    port: Option<u16>,
) -> Result<&mut DestConf, String> {
    let svc_port = svc.key.port;
    let mut matches = svc.dests.iter_mut().filter(|d| {
        d.addr == addr
            && match port {
                Some(p) => d.port == p || (d.forward != Forward::Masq && p == svc_port),
                None => true,
            }
    });
    let first = matches.next().ok_or("No such destination")?;
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        }
    }

    fn wrr() -> ServiceOpts {
        ServiceOpts {
            scheduler: "wrr".into(),
            ..Default::default()
        }
    }

    fn add_dest(ip: &str, w: u32) -> Request {
        Request::AddDest {
            service: key(),
            dest: DestSpec {
                addr: ip.parse().unwrap(),
                port: Some(8080),
                forward: Forward::Route,
                weight: w,
                u_threshold: 0,
                l_threshold: 0,
            },
        }
    }

    #[test]
    fn service_and_dest_lifecycle() {
        let mut m = ConfigModel::default();
        m.apply(&Request::AddService {
            key: key(),
            opts: wrr(),
        })
        .unwrap();
        assert_eq!(
            m.apply(&Request::AddService {
                key: key(),
                opts: wrr()
            }),
            Err("Service already exists".into())
        );
        m.apply(&add_dest("10.0.0.9", 2)).unwrap();
        m.apply(&add_dest("10.0.0.20", 5)).unwrap();
        // Newest first, DR port forced to the service port.
        let d = &m.services[0].dests;
        assert_eq!((d[0].addr.to_string(), d[0].port), ("10.0.0.20".into(), 80));
        assert_eq!(
            m.apply(&add_dest("10.0.0.9", 1)),
            Err("Destination already exists".into())
        );
        m.apply(&Request::EditDest {
            service: key(),
            dest: DestEdit {
                addr: "10.0.0.9".parse().unwrap(),
                port: Some(80),
                forward: None,
                weight: Some(0),
                u_threshold: None,
                l_threshold: None,
            },
        })
        .unwrap();
        assert_eq!(m.services[0].dests[1].weight, 0);
        m.apply(&Request::DeleteDest {
            service: key(),
            addr: "10.0.0.20".parse().unwrap(),
            port: None,
        })
        .unwrap();
        assert_eq!(m.services[0].dests.len(), 1);
        assert_eq!(
            m.apply(&Request::DeleteDest {
                service: key(),
                addr: "10.0.0.20".parse().unwrap(),
                port: None,
            }),
            Err("No such destination".into())
        );
    }

    #[test]
    fn errors_leave_model_unchanged() {
        let mut m = ConfigModel::default();
        let bad = ServiceOpts {
            scheduler: "bogus".into(),
            ..Default::default()
        };
        assert_eq!(
            m.apply(&Request::AddService {
                key: key(),
                opts: bad
            }),
            Err("Scheduler not found: ip_vs_bogus.ko".into())
        );
        assert_eq!(
            m.apply(&add_dest("10.0.0.9", 1)),
            Err("No such service".into())
        );
        assert_eq!(m, ConfigModel::default());

        // A batch fails as a whole.
        let before = m.clone();
        let r = m.apply(&Request::Batch(vec![
            Request::AddService {
                key: key(),
                opts: wrr(),
            },
            add_dest("10.0.0.9", 1),
            add_dest("10.0.0.9", 1),
        ]));
        assert!(r.unwrap_err().contains("restore line 3"));
        assert_eq!(m, before);
    }

    #[test]
    fn set_timeouts_zero_keeps() {
        let mut m = ConfigModel::default();
        m.apply(&Request::SetTimeouts(Timeouts {
            tcp: 5,
            tcp_fin: 0,
            udp: 7,
        }))
        .unwrap();
        assert_eq!(
            m.timeouts,
            Timeouts {
                tcp: 5,
                tcp_fin: 120,
                udp: 7
            }
        );
    }
}
