//! The checks `load_case` makes on each part of a `case.yaml`: manifests that exist,
//! externals inside TEST-NET with unique names and addresses, and steps whose delete, label and
//! probe lines parse and name only declared externals.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use super::{CaseError, CaseProblem, CaseProto, External, Probe, RawExternal, RawStep, Step, Via};
use crate::table::{Endpoint, Table, TableError};
use palisade::k8s::cluster::{LabelChange, ObjectRef};

/// The address blocks reserved for documentation (RFC 5737, RFC 3849). External hosts must use
/// them, so that no probe can ever reach a real host, whatever the lab's routing does.
pub(super) const TEST_NETS: &str = "192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32";

fn is_test_net(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            matches!(
                ip.octets(),
                [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
            )
        }
        IpAddr::V6(ip) => ip.segments()[..2] == [0x2001, 0x0db8],
    }
}

/// `TCP/80`.
fn parse_proto_port(text: &str) -> Result<(CaseProto, u16), CaseProblem> {
    let (protocol, port) = text
        .split_once('/')
        .ok_or_else(|| CaseProblem::BadProtoPort {
            text: text.to_owned(),
        })?;
    let protocol = protocol.parse()?;
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok((protocol, port)),
        _ => Err(CaseProblem::BadPort {
            port: port.to_owned(),
        }),
    }
}

/// Checks parts of one `case.yaml`, naming it in errors.
pub(super) struct Checker<'a> {
    pub(super) dir: &'a Path,
    pub(super) file: &'a Path,
}

impl Checker<'_> {
    pub(super) fn invalid(&self, field: String, problem: CaseProblem) -> CaseError {
        CaseError::Invalid {
            file: self.file.to_owned(),
            field,
            problem,
        }
    }

    pub(super) fn files(&self, names: &[String], field: &str) -> Result<Vec<PathBuf>, CaseError> {
        let mut paths = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let path = self.dir.join(name);
            if !path.is_file() {
                return Err(
                    self.invalid(format!("{field}[{i}]"), CaseProblem::MissingFile { path })
                );
            }
            paths.push(path);
        }
        Ok(paths)
    }

    pub(super) fn externals(&self, raw: Vec<RawExternal>) -> Result<Vec<External>, CaseError> {
        let mut externals: Vec<External> = Vec::with_capacity(raw.len());
        for (i, external) in raw.into_iter().enumerate() {
            let at = format!("externals[{i}]");
            let name = external.name;
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_name {
                return Err(
                    self.invalid(format!("{at}.name"), CaseProblem::BadExternalName { name })
                );
            }
            if externals.iter().any(|other| other.name == name) {
                return Err(self.invalid(
                    format!("{at}.name"),
                    CaseProblem::DuplicateExternal { name },
                ));
            }
            if !is_test_net(external.ip) {
                let problem = CaseProblem::NotTestNet { ip: external.ip };
                return Err(self.invalid(format!("{at}.ip"), problem));
            }
            if let Some(other) = externals.iter().find(|other| other.ip == external.ip) {
                let other = other.name.clone();
                return Err(self.invalid(
                    format!("{at}.ip"),
                    CaseProblem::DuplicateExternalIp { name, other },
                ));
            }
            let ports = external
                .ports
                .iter()
                .enumerate()
                .map(|(j, port)| {
                    parse_proto_port(port)
                        .map_err(|problem| self.invalid(format!("{at}.ports[{j}]"), problem))
                })
                .collect::<Result<_, _>>()?;
            externals.push(External {
                name,
                ip: external.ip,
                ports,
            });
        }
        Ok(externals)
    }

    pub(super) fn step(
        &self,
        raw: RawStep,
        at: &str,
        externals: &[External],
    ) -> Result<Step, CaseError> {
        let apply = self.files(&raw.apply, &format!("{at}.apply"))?;
        for (j, reference) in raw.delete.iter().enumerate() {
            if let Err(error) = reference.parse::<ObjectRef>() {
                let problem = CaseProblem::Object(Box::new(error));
                return Err(self.invalid(format!("{at}.delete[{j}]"), problem));
            }
        }
        for (j, spec) in raw.label.iter().enumerate() {
            if let Err(error) = spec.parse::<LabelChange>() {
                let problem = CaseProblem::Object(Box::new(error));
                return Err(self.invalid(format!("{at}.label[{j}]"), problem));
            }
        }
        let mut probes = Vec::with_capacity(raw.probes.len());
        for (j, probe) in raw.probes.into_iter().enumerate() {
            let at = format!("{at}.probes[{j}]");
            let connect = parse_proto_port(&probe.connect)
                .map_err(|problem| self.invalid(format!("{at}.connect"), problem))?;
            let expect: Table = probe
                .expect
                .parse()
                .map_err(|error: TableError| self.invalid(format!("{at}.expect"), error.into()))?;
            self.endpoints(&expect, probe.via, externals)
                .map_err(|problem| self.invalid(format!("{at}.expect"), problem))?;
            probes.push(Probe {
                connect,
                via: probe.via,
                expect,
            });
        }
        Ok(Step {
            apply,
            delete: raw.delete,
            label: raw.label,
            probes,
        })
    }

    /// Externals in a table must be declared, and cannot be reached through a Service.
    fn endpoints(
        &self,
        table: &Table,
        via: Via,
        externals: &[External],
    ) -> Result<(), CaseProblem> {
        for name in table.rows.iter().chain(&table.columns) {
            let Endpoint::External(name) = name.parse()? else {
                continue;
            };
            if !externals.iter().any(|external| external.name == name) {
                return Err(CaseProblem::UnknownExternal { name });
            }
            if via == Via::Service {
                return Err(CaseProblem::ServiceWithExternal { name });
            }
        }
        Ok(())
    }
}
