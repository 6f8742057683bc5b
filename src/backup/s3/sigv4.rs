//! AWS Signature Version 4 (header-based) for S3 requests.
//!
//! The pieces follow the published algorithm step by step, so that each one can be checked
//! against the reference examples: the canonical request, the string to sign, the signing key
//! derived from the secret and the credential scope, and the `Authorization` header.

use sha2::{Digest, Sha256};
use std::fmt;

/// The algorithm name used in the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// SHA-256 of the empty string, the payload hash of requests without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key. The secret never appears in Debug output.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// HMAC-SHA256 (RFC 2104) over SHA-256's 64-byte blocks.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        inner_pad[i] ^= block[i];
        outer_pad[i] ^= block[i];
    }
    let inner = Sha256::new().chain_update(inner_pad).chain_update(data).finalize();
    Sha256::new().chain_update(outer_pad).chain_update(inner).finalize().into()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SigV4 URI encoding: every byte except the unreserved characters `A-Z a-z 0-9 - _ . ~`
/// becomes `%XX` (upper-case hex); `/` is kept when `keep_slash` is set (object key paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
        }
    }
    out
}

/// The canonical query string: names and values URI-encoded, sorted by name then value,
/// `name=value` joined by `&` (a parameter without a value is `name=`). Also usable as the
/// request's query string as sent.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// A header value as it is signed: trimmed, with runs of spaces collapsed to one.
fn canonical_header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut space = false;
    for c in v.trim().chars() {
        if c == ' ' || c == '\t' {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// The request parts that the signature covers.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent: already URI-encoded (for S3, each key segment once, `/` kept).
    pub canonical_uri: &'a str,
    /// As built by [`canonical_query`].
    pub canonical_query: &'a str,
    /// Every header to sign, including `host` and `x-amz-date`; names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body (also sent as `x-amz-content-sha256` to S3).
    pub payload_sha256: &'a str,
}

/// The canonical request and the `;`-joined list of signed header names.
pub fn canonical_request(req: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> =
        req.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), canonical_header_value(v))).collect();
    // Stable: a header given twice is signed once, its values joined by commas in the order given.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        match merged.last_mut() {
            Some((last, values)) if *last == k => {
                values.push(',');
                values.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let signed = merged.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.push_str(req.canonical_uri);
    out.push('\n');
    out.push_str(req.canonical_query);
    out.push('\n');
    for (k, v) in &merged {
        out.push_str(k);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed);
    out.push('\n');
    out.push_str(req.payload_sha256);
    (out, signed)
}

/// `date/region/service/aws4_request`, `date` being the `YYYYMMDD` part of the request time.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The string to sign for a canonical request at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The key derived from the secret for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Hex signature of a string to sign.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(key, string_to_sign.as_bytes()))
}

/// The `Authorization` header value for `req`, sent at `amz_date` (which must also be the
/// signed `x-amz-date` header).
pub fn authorization(creds: &Credentials, region: &str, service: &str, amz_date: &str, req: &Request<'_>) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let (canonical, signed_headers) = canonical_request(req);
    let scope = credential_scope(date, region, service);
    let to_sign = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(&creds.secret_access_key, date, region, service);
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
        creds.access_key_id,
        signature(&key, &to_sign)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example credentials of the AWS Signature Version 4 test suite.
    fn suite_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: a short key.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block, hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hmac_matches_openssl_for_every_key_length() {
        use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
        // OpenSSL refuses an empty HMAC key; that case has a well-known value.
        assert_eq!(
            hex::encode(hmac_sha256(b"", b"")),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"
        );
        for len in [1usize, 31, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let data: Vec<u8> = (0..len * 3 + 1).map(|i| (i * 13) as u8).collect();
            let pkey = PKey::hmac(&key).unwrap();
            let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
            signer.update(&data).unwrap();
            assert_eq!(hmac_sha256(&key, &data).to_vec(), signer.sign_to_vec().unwrap(), "key length {len}");
        }
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(uri_encode("a b/c~d_e-f.g", true), "a%20b/c~d_e-f.g");
        assert_eq!(uri_encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(uri_encode("ü+€=&?#%", true), "%C3%BC%2B%E2%82%AC%3D%26%3F%23%25");
        assert_eq!(uri_encode("AZaz09", false), "AZaz09");
    }

    #[test]
    fn query_is_sorted_by_encoded_name_then_value() {
        assert_eq!(canonical_query(&[]), "");
        assert_eq!(canonical_query(&[("Param2", "value2"), ("Param1", "value1")]), "Param1=value1&Param2=value2");
        assert_eq!(canonical_query(&[("uploads", "")]), "uploads=");
        assert_eq!(
            canonical_query(&[("prefix", "a b/ü"), ("list-type", "2"), ("continuation-token", "x+y=")]),
            "continuation-token=x%2By%3D&list-type=2&prefix=a%20b%2F%C3%BC"
        );
        assert_eq!(canonical_query(&[("b", "2"), ("a", "z"), ("a", "b")]), "a=b&a=z&b=2");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(canonical_header_value("  a   b \t c  "), "a b c");
        assert_eq!(canonical_header_value("plain"), "plain");
    }

    /// `get-vanilla` from the AWS Signature Version 4 test suite.
    #[test]
    fn aws_suite_get_vanilla() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")];
        let req = Request {
            method: "GET",
            canonical_uri: "/",
            canonical_query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (canonical, signed) = canonical_request(&req);
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-amz-date");
        let scope = credential_scope("20150830", "us-east-1", "service");
        let sts = string_to_sign("20150830T123600Z", &scope, &canonical);
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        let creds = suite_creds();
        let key = signing_key(&creds.secret_access_key, "20150830", "us-east-1", "service");
        assert_eq!(signature(&key, &sts), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
        assert_eq!(
            authorization(&creds, "us-east-1", "service", "20150830T123600Z", &req),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// `get-vanilla-query-order-key-case` from the AWS Signature Version 4 test suite.
    #[test]
    fn aws_suite_get_vanilla_query_order() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")];
        let query = canonical_query(&[("Param2", "value2"), ("Param1", "value1")]);
        let req = Request {
            method: "GET",
            canonical_uri: "/",
            canonical_query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (canonical, _) = canonical_request(&req);
        assert_eq!(
            canonical,
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            authorization(&suite_creds(), "us-east-1", "service", "20150830T123600Z", &req),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    /// The S3 documentation's examples: GET Object with a Range header, PUT Object with a
    /// body, and a bucket listing with query parameters.
    #[test]
    fn s3_documentation_examples() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        };
        let date = "20130524T000000Z";

        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", date),
        ];
        let get = Request {
            method: "GET",
            canonical_uri: "/test.txt",
            canonical_query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (canonical, _) = canonical_request(&get);
        let sts = string_to_sign(date, &credential_scope("20130524", "us-east-1", "s3"), &canonical);
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            authorization(&creds, "us-east-1", "s3", date, &get),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );

        let body = b"Welcome to Amazon S3.";
        let hash = sha256_hex(body);
        assert_eq!(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
        let uri = format!("/{}", uri_encode("test$file.text", true));
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", date),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", &hash),
        ];
        let put = Request {
            method: "PUT",
            canonical_uri: &uri,
            canonical_query: "",
            headers: &headers,
            payload_sha256: &hash,
        };
        assert_eq!(
            authorization(&creds, "us-east-1", "s3", date, &put),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
             Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );

        let query = canonical_query(&[("max-keys", "2"), ("prefix", "J")]);
        let headers =
            [("Host", "examplebucket.s3.amazonaws.com"), ("x-amz-content-sha256", EMPTY_SHA256), ("x-amz-date", date)];
        let list = Request {
            method: "GET",
            canonical_uri: "/",
            canonical_query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            authorization(&creds, "us-east-1", "s3", date, &list),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn repeated_headers_are_joined() {
        let headers = [("X-B", "2"), ("Host", "h"), ("x-b", " 1 ")];
        let req =
            Request { method: "GET", canonical_uri: "/", canonical_query: "", headers: &headers, payload_sha256: "p" };
        let (canonical, signed) = canonical_request(&req);
        assert_eq!(signed, "host;x-b");
        assert!(canonical.contains("\nx-b:2,1\n"), "{canonical}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = format!("{:?}", suite_creds());
        assert!(s.contains("AKIDEXAMPLE") && !s.contains("EXAMPLEKEY"), "{s}");
    }
}
