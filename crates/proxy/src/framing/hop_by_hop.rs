//! Headers that belong to one hop and must not be forwarded (RFC 9110 section 7.6.1), with the
//! pre-standard `keep-alive` and `proxy-connection`. Both paths use this one list: the relay when
//! it rewrites a head, and the general path on hyper's header maps.

/// The hop-by-hop header names, lowercase.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Whether a header (by name, any case) belongs to one hop only.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name))
}

/// Removes the hop-by-hop headers, and those a `Connection` header names, from a header map.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Most messages have no Connection header; only then is there a list to collect.
    if headers.contains_key(http::header::CONNECTION) {
        let listed: Vec<http::HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, header};

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
