//! The SDP parser: line grammar of RFC 4566 for the fields this module models.

use std::net::IpAddr;

use super::{
    Attribute, Direction, Fmtp, MediaDescription, Origin, PayloadType, RtpMap, SdpError,
    SessionDescription,
};

/// Parses a whole description (see [`SessionDescription::parse`]).
pub(super) fn parse_description(text: &str) -> Result<SessionDescription, SdpError> {
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "v=0")) => {}
        _ => return Err(SdpError::MissingVersion),
    }
    let mut origin = None;
    let mut session_name = None;
    let mut connection = None;
    let mut timing = None;
    let mut direction = None;
    let mut attributes = Vec::new();
    let mut media: Vec<MediaDescription> = Vec::new();
    for (line, text) in lines {
        let bytes = text.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(SdpError::MalformedLine { line });
        }
        let kind = char::from(bytes[0]);
        let value = &text[2..];
        let invalid = SdpError::InvalidValue { line, kind };
        match (kind, media.last_mut()) {
            ('m', _) => media.push(parse_media(value).ok_or(invalid)?),
            ('c', Some(m)) => m.connection = Some(parse_connection(value).ok_or(invalid)?),
            ('c', None) => connection = Some(parse_connection(value).ok_or(invalid)?),
            ('a', Some(m)) => apply_media_attribute(m, line, value)?,
            ('a', None) => match parse_attribute(line, value)? {
                Attribute { name, value: None } if Direction::from_name(&name).is_some() => {
                    direction = Direction::from_name(&name)
                }
                other => attributes.push(other),
            },
            ('o', None) if origin.is_none() => origin = Some(parse_origin(value).ok_or(invalid)?),
            ('s', None) if session_name.is_none() => session_name = Some(value.to_owned()),
            ('t', None) if timing.is_none() => timing = Some(parse_timing(value).ok_or(invalid)?),
            // i= u= e= p= b= z= k= r=, repeated t=, and unknown letters: not needed here.
            _ => {}
        }
    }
    Ok(SessionDescription {
        origin: origin.ok_or(SdpError::MissingLine { kind: 'o' })?,
        session_name: session_name.unwrap_or_else(|| "-".to_owned()),
        connection,
        timing: timing.unwrap_or((0, 0)),
        direction,
        attributes,
        media,
    })
}

/// Applies one media-level `a=` line.
fn apply_media_attribute(
    media: &mut MediaDescription,
    line: usize,
    value: &str,
) -> Result<(), SdpError> {
    let attribute = parse_attribute(line, value)?;
    let invalid = || SdpError::InvalidAttribute {
        line,
        name: attribute.name.clone(),
    };
    match (attribute.name.as_str(), attribute.value.as_deref()) {
        ("rtpmap", Some(v)) => media.rtpmaps.push(parse_rtpmap(v).ok_or_else(invalid)?),
        ("fmtp", Some(v)) => media.fmtps.push(parse_fmtp(v).ok_or_else(invalid)?),
        ("ptime", Some(v)) => media.ptime = Some(parse_u32(v).ok_or_else(invalid)?),
        ("maxptime", Some(v)) => media.maxptime = Some(parse_u32(v).ok_or_else(invalid)?),
        (name, None) if Direction::from_name(name).is_some() => {
            media.direction = Direction::from_name(name)
        }
        _ => media.attributes.push(attribute),
    }
    Ok(())
}

/// A token as RFC 4566 allows in names: visible ASCII without the separators we split on.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn parse_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_origin(value: &str) -> Option<Origin> {
    let mut parts = value.split(' ').filter(|p| !p.is_empty());
    let username = parts.next()?;
    let session_id = parse_u64(parts.next()?)?;
    let session_version = parse_u64(parts.next()?)?;
    let ipv6 = match (parts.next()?, parts.next()?) {
        ("IN", "IP4") => false,
        ("IN", "IP6") => true,
        _ => return None,
    };
    let address = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Origin {
        username: username.to_owned(),
        session_id,
        session_version,
        address: address.to_owned(),
        ipv6,
    })
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut parts = value.split(' ').filter(|p| !p.is_empty());
    let kind = match (parts.next()?, parts.next()?) {
        ("IN", kind) => kind,
        _ => return None,
    };
    // Multicast addresses carry /ttl[/count] suffixes; only the address matters here.
    let address = parts.next()?.split('/').next()?;
    if parts.next().is_some() {
        return None;
    }
    let address: IpAddr = address.parse().ok()?;
    match (kind, address) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(address),
        _ => None,
    }
}

fn parse_timing(value: &str) -> Option<(u64, u64)> {
    let mut parts = value.split(' ').filter(|p| !p.is_empty());
    let start = parse_u64(parts.next()?)?;
    let stop = parse_u64(parts.next()?)?;
    parts.next().is_none().then_some((start, stop))
}

fn parse_media(value: &str) -> Option<MediaDescription> {
    let mut parts = value.split(' ').filter(|p| !p.is_empty());
    let media = parts.next()?;
    let port_field = parts.next()?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(parse_u32(count)?.try_into().ok()?)),
        None => (port_field, None),
    };
    let port: u16 = parse_u32(port)?.try_into().ok()?;
    let protocol = parts.next()?;
    let formats: Vec<String> = parts.map(str::to_owned).collect();
    if !is_token(media) || !is_token(protocol) || formats.is_empty() {
        return None;
    }
    let rtp = protocol.to_ascii_uppercase().starts_with("RTP/");
    if rtp && formats.iter().any(|f| PayloadType::parse(f).is_none()) {
        return None;
    }
    if formats
        .iter()
        .any(|f| !f.bytes().all(|b| b.is_ascii_graphic()))
    {
        return None;
    }
    Some(MediaDescription {
        media: media.to_owned(),
        port,
        port_count,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        maxptime: None,
        direction: None,
        attributes: Vec::new(),
    })
}

fn parse_attribute(line: usize, value: &str) -> Result<Attribute, SdpError> {
    let (name, value) = match value.split_once(':') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (value, None),
    };
    if !is_token(name) {
        return Err(SdpError::InvalidAttribute {
            line,
            name: String::new(),
        });
    }
    Ok(Attribute {
        name: name.to_owned(),
        value,
    })
}

fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, encoding) = value.split_once(' ')?;
    let payload_type = PayloadType::parse(pt)?;
    let mut fields = encoding.trim().split('/');
    let name = fields.next()?;
    let clock_rate = parse_u32(fields.next()?)?;
    let channels = match fields.next() {
        Some(c) => parse_u32(c)?.try_into().ok()?,
        None => 1,
    };
    if fields.next().is_some()
        || !is_token(name)
        || name.contains('/')
        || clock_rate == 0
        || channels == 0
    {
        return None;
    }
    Some(RtpMap {
        payload_type,
        name: name.to_owned(),
        clock_rate,
        channels,
    })
}

fn parse_fmtp(value: &str) -> Option<Fmtp> {
    let (pt, parameters) = value.split_once(' ')?;
    let parameters = parameters.trim_matches(' ');
    if parameters.is_empty() {
        return None;
    }
    Some(Fmtp {
        payload_type: PayloadType::parse(pt)?,
        parameters: parameters.to_owned(),
    })
}
