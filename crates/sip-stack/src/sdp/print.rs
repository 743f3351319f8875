//! The SDP printer: CRLF-terminated lines in RFC 4566 order.

use std::fmt;
use std::net::IpAddr;

use super::{Attribute, MediaDescription, PayloadType, RtpMap, SessionDescription};

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            if o.ipv6 { "IP6" } else { "IP4" },
            o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        if let Some(addr) = self.connection {
            write_connection(f, addr)?;
        }
        write!(f, "t={} {}\r\n", self.timing.0, self.timing.1)?;
        if let Some(direction) = self.direction {
            write!(f, "a={}\r\n", direction.as_str())?;
        }
        for attribute in &self.attributes {
            write_attribute(f, attribute)?;
        }
        for media in &self.media {
            write!(f, "{media}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", self.protocol)?;
        for format in &self.formats {
            write!(f, " {format}")?;
        }
        write!(f, "\r\n")?;
        if let Some(addr) = self.connection {
            write_connection(f, addr)?;
        }
        // rtpmap then fmtp for each format in order, then any naming payload types not listed.
        let mut rtpmap_done = vec![false; self.rtpmaps.len()];
        let mut fmtp_done = vec![false; self.fmtps.len()];
        for pt in self.formats.iter().filter_map(|f| PayloadType::parse(f)) {
            for (i, map) in self.rtpmaps.iter().enumerate() {
                if map.payload_type == pt && !rtpmap_done[i] {
                    rtpmap_done[i] = true;
                    write_rtpmap(f, map)?;
                }
            }
            for (i, fmtp) in self.fmtps.iter().enumerate() {
                if fmtp.payload_type == pt && !fmtp_done[i] {
                    fmtp_done[i] = true;
                    write!(f, "a=fmtp:{} {}\r\n", fmtp.payload_type, fmtp.parameters)?;
                }
            }
        }
        for (map, _) in self.rtpmaps.iter().zip(&rtpmap_done).filter(|(_, d)| !**d) {
            write_rtpmap(f, map)?;
        }
        for (fmtp, _) in self.fmtps.iter().zip(&fmtp_done).filter(|(_, d)| !**d) {
            write!(f, "a=fmtp:{} {}\r\n", fmtp.payload_type, fmtp.parameters)?;
        }
        if let Some(ptime) = self.ptime {
            write!(f, "a=ptime:{ptime}\r\n")?;
        }
        if let Some(maxptime) = self.maxptime {
            write!(f, "a=maxptime:{maxptime}\r\n")?;
        }
        if let Some(direction) = self.direction {
            write!(f, "a={}\r\n", direction.as_str())?;
        }
        for attribute in &self.attributes {
            write_attribute(f, attribute)?;
        }
        Ok(())
    }
}

fn write_connection(f: &mut fmt::Formatter<'_>, addr: IpAddr) -> fmt::Result {
    let kind = if addr.is_ipv6() { "IP6" } else { "IP4" };
    write!(f, "c=IN {kind} {addr}\r\n")
}

fn write_rtpmap(f: &mut fmt::Formatter<'_>, map: &RtpMap) -> fmt::Result {
    write!(
        f,
        "a=rtpmap:{} {}/{}",
        map.payload_type, map.name, map.clock_rate
    )?;
    if map.channels != 1 {
        write!(f, "/{}", map.channels)?;
    }
    write!(f, "\r\n")
}

fn write_attribute(f: &mut fmt::Formatter<'_>, attribute: &Attribute) -> fmt::Result {
    match &attribute.value {
        Some(value) => write!(f, "a={}:{}\r\n", attribute.name, value),
        None => write!(f, "a={}\r\n", attribute.name),
    }
}
