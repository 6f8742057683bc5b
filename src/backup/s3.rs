//! S3-compatible object storage for backup repositories.
//!
//! A repository is `s3://bucket/prefix`: the object of key `k` is stored as `prefix/k` in the
//! bucket. Requests are signed with AWS Signature Version 4 (module `sigv4`) over the real SHA-256 of
//! every body, so the store verifies what it received.
//!
//! Addressing: with `backup_s3_endpoint` set (MinIO, Ceph, moto, another provider) requests go
//! path-style to `endpoint/bucket/key`. Without one they go to AWS at
//! `https://s3.<region>.amazonaws.com`, virtual-host style (`https://bucket.s3.<region>.amazonaws.com/key`)
//! when the bucket name is a plain DNS label, otherwise path-style (names with dots would not
//! match the TLS certificate as a host name).
//!
//! Writes: an object of up to 8 MiB is sent with one PUT when its writer commits. A larger one
//! becomes a multipart upload of 8 MiB parts, sent while the object is written, so at most one
//! part is held in memory; the upload is completed by `commit` and aborted when the writer is
//! dropped without a commit, so nothing appears under the key. With 10,000 parts at most, an
//! object can be up to 78 GiB. An upload left behind by a process that died (no abort ran) is
//! listed by [`S3Storage::list_multipart_uploads`]; a bucket lifecycle rule that aborts
//! incomplete uploads after a day cleans such leftovers up on AWS.

mod sigv4;
mod xml;

use super::storage::{check_key, ObjectWriter, Storage};
use crate::config::Config;
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per multipart part, and the largest object sent with a single PUT.
const PART_SIZE: usize = 8 << 20;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: u32 = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts per request when the store answers 500/502/503/504 or a connection breaks.
const ATTEMPTS: u32 = 3;
/// How much of an error response is read for its code and message.
const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// Error codes that mean the credentials, the signature or the region are wrong.
const CREDENTIAL_CODES: &[&str] = &[
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "RequestTimeTooSkewed",
    "AuthorizationHeaderMalformed",
];

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {
    client: Arc<Client>,
    /// Keys asked for per page when listing (1 to 1000); `None` leaves it to the server
    /// (1000 on AWS).
    pub page_size: Option<u32>,
}

#[derive(Debug)]
struct Client {
    agent: ureq::Agent,
    scheme: &'static str,
    /// The `Host` header of every request.
    host: String,
    /// The bucket's path on `host`: empty for virtual-host style, `/bucket` (after the
    /// endpoint's own path, if any) for path style.
    bucket_path: String,
    bucket: String,
    /// Empty, or the repository's prefix followed by `/`.
    prefix: String,
    region: String,
    creds: sigv4::Credentials,
}

/// One request: method, object (`None` for the bucket itself), query parameters and body.
struct Call<'a> {
    method: &'static str,
    key: Option<&'a str>,
    query: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

/// Why a request failed: the store's answer, or a transport problem already classified
/// (`retry`: the request may be sent again).
enum Failure {
    Status { status: u16, code: String, message: String },
    Transport { error: Error, retry: bool },
}

impl Failure {
    fn is_404(&self) -> bool {
        matches!(self, Failure::Status { status: 404, .. })
    }

    fn code(&self) -> &str {
        match self {
            Failure::Status { code, .. } => code,
            Failure::Transport { .. } => "",
        }
    }

    fn into_error(self, op: &str, location: &str) -> Error {
        match self {
            Failure::Transport { error, .. } => match error {
                Error::Connection(m) => Error::Connection(format!("S3 {op} {location}: {m}")),
                Error::Timeout(m) => Error::Timeout(format!("S3 {op} {location}: {m}")),
                Error::Io(m) => Error::Io(format!("S3 {op} {location}: {m}")),
                other => other,
            },
            Failure::Status { status, code, message } => {
                let mut text = format!("S3 {op} {location}: HTTP {status}");
                if !code.is_empty() {
                    text.push(' ');
                    text.push_str(&code);
                }
                if !message.is_empty() {
                    text.push_str(": ");
                    text.push_str(&message);
                }
                if (status == 403 && code.is_empty()) || CREDENTIAL_CODES.contains(&code.as_str()) {
                    text.push_str(" (check backup_s3_access_key_id, backup_s3_secret_access_key and backup_s3_region)");
                    Error::Auth(text)
                } else {
                    Error::Io(text)
                }
            }
        }
    }
}

fn config_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// `s3://bucket/prefix` → (bucket, prefix without surrounding slashes).
fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| config_err(format!("backup_s3_url must look like s3://bucket/prefix, got {url:?}")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = !bucket.is_empty()
        && bucket.len() <= 255
        && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !bucket_ok {
        return Err(config_err(format!(
            "backup_s3_url {url:?}: {bucket:?} is not a bucket name (letters, digits, '-', '.', '_')"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() && check_key(prefix).is_err() {
        return Err(config_err(format!(
            "backup_s3_url {url:?}: the prefix {prefix:?} must be '/'-separated names without empty, '.' or '..' parts"
        )));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// `http(s)://host[:port][/path]` → (scheme, host, path without a trailing slash).
fn parse_endpoint(endpoint: &str) -> Result<(&'static str, String, String)> {
    let bad = |why: &str| config_err(format!("backup_s3_endpoint {endpoint:?}: {why}"));
    let lower = endpoint.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https", &endpoint[8..])
    } else if lower.starts_with("http://") {
        ("http", &endpoint[7..])
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') || rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err(bad("must be scheme://host[:port][/path], without credentials, query or fragment"));
    }
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let port = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => None,
            Some((_, after)) => Some(after.strip_prefix(':').ok_or_else(|| bad("has an invalid port"))?),
            None => return Err(bad("has an unclosed '['")),
        },
        None => authority.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad("has an invalid port"));
    }
    Ok((scheme, authority.to_ascii_lowercase(), path.trim_end_matches('/').to_string()))
}

/// True for names usable as the first label of a host name (no dots, no upper case).
fn dns_label(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

impl S3Storage {
    /// The repository `backup_s3_url` names, reached through `backup_s3_endpoint` (or AWS in
    /// `backup_s3_region`) with `backup_s3_access_key_id` and `backup_s3_secret_access_key`.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let url = cfg
            .backup_s3_url
            .as_deref()
            .ok_or_else(|| config_err("backup_s3_url (ROOTSTREAM_BACKUP_S3_URL) is not set"))?;
        let (bucket, prefix) = parse_url(url)?;
        let access_key_id = cfg.backup_s3_access_key_id.clone().ok_or_else(|| {
            config_err(format!(
                "S3 repository {url}: backup_s3_access_key_id (ROOTSTREAM_BACKUP_S3_ACCESS_KEY_ID) is not set"
            ))
        })?;
        let secret_access_key = cfg.backup_s3_secret_access_key.clone().ok_or_else(|| {
            config_err(format!(
                "S3 repository {url}: backup_s3_secret_access_key (ROOTSTREAM_BACKUP_S3_SECRET_ACCESS_KEY) is not set"
            ))
        })?;
        let region = cfg.backup_s3_region.trim().to_string();
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(config_err(format!("backup_s3_region {region:?} is not a region name (like us-east-1)")));
        }
        let (scheme, host, bucket_path) = match cfg.backup_s3_endpoint.as_deref() {
            Some(endpoint) => {
                let (scheme, host, path) = parse_endpoint(endpoint.trim())?;
                (scheme, host, format!("{path}/{bucket}"))
            }
            None if dns_label(&bucket) => ("https", format!("{bucket}.s3.{region}.amazonaws.com"), String::new()),
            None => ("https", format!("s3.{region}.amazonaws.com"), format!("/{bucket}")),
        };
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(IO_TIMEOUT)
            .timeout_write(IO_TIMEOUT)
            .redirects(0)
            .user_agent(concat!("rootstream-db/", env!("CARGO_PKG_VERSION")));
        if scheme == "https" {
            let tls = native_tls::TlsConnector::new().map_err(|e| Error::Io(format!("cannot set up TLS: {e}")))?;
            builder = builder.tls_connector(Arc::new(tls));
        }
        let client = Client {
            agent: builder.build(),
            scheme,
            host,
            bucket_path,
            bucket,
            prefix: if prefix.is_empty() { prefix } else { format!("{prefix}/") },
            region,
            creds: sigv4::Credentials { access_key_id, secret_access_key },
        };
        Ok(S3Storage { client: Arc::new(client), page_size: None })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.client.bucket
    }

    /// Creates the bucket; succeeds when it exists already and belongs to these credentials.
    pub fn create_bucket(&self) -> Result<()> {
        let c = &self.client;
        let body = if c.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(&c.region)
            )
        };
        let location = format!("s3://{}", c.bucket);
        let call = Call { method: "PUT", key: None, query: &[], body: body.as_bytes() };
        match c.execute(&call) {
            Ok(resp) => {
                drain(resp);
                Ok(())
            }
            Err(f) if f.code() == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(f) => Err(f.into_error("CreateBucket", &location)),
        }
    }

    /// Multipart uploads started under `prefix` (relative to the repository) and neither
    /// completed nor aborted: (key, upload id), sorted.
    pub fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let c = &self.client;
        let full = format!("{}{prefix}", c.prefix);
        let location = c.location(prefix);
        let page = self.page_size.map(|n| n.clamp(1, 1000).to_string());
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut query = vec![("uploads", ""), ("prefix", full.as_str())];
            if let Some(p) = &page {
                query.push(("max-uploads", p));
            }
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let call = Call { method: "GET", key: None, query: &query, body: b"" };
            let resp = c.execute(&call).map_err(|f| f.into_error("ListMultipartUploads", &location))?;
            let root = read_xml(resp, "ListMultipartUploads", &location)?;
            let bad = |what: &str| Error::Io(format!("S3 ListMultipartUploads {location}: {what}"));
            if root.name != "ListMultipartUploadsResult" {
                return Err(bad(&format!("unexpected <{}> response", root.name)));
            }
            for upload in root.children("Upload") {
                let key = upload.child_text("Key").ok_or_else(|| bad("an <Upload> without <Key>"))?;
                let id = upload.child_text("UploadId").ok_or_else(|| bad("an <Upload> without <UploadId>"))?;
                if let Some(rel) = key.strip_prefix(&c.prefix) {
                    out.push((rel.to_string(), id.to_string()));
                }
            }
            if root.child_text("IsTruncated") != Some("true") {
                break;
            }
            let next_key = root.child_text("NextKeyMarker").unwrap_or_default().to_string();
            let next_id = root.child_text("NextUploadIdMarker").unwrap_or_default().to_string();
            if next_key.is_empty() || (next_key == key_marker && next_id == id_marker) {
                return Err(bad("a truncated listing without a new NextKeyMarker"));
            }
            (key_marker, id_marker) = (next_key, next_id);
        }
        out.sort();
        Ok(out)
    }
}

impl Client {
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Sends a request, retrying when the store is briefly unavailable. A 2xx response is
    /// returned; anything else becomes a [`Failure`].
    fn execute(&self, call: &Call<'_>) -> std::result::Result<ureq::Response, Failure> {
        let path = match call.key {
            Some(key) => format!("{}/{}", self.bucket_path, sigv4::uri_encode(key, true)),
            None if self.bucket_path.is_empty() => "/".to_string(),
            None => self.bucket_path.clone(),
        };
        let query = sigv4::canonical_query(call.query);
        let url = if query.is_empty() {
            format!("{}://{}{path}", self.scheme, self.host)
        } else {
            format!("{}://{}{path}?{query}", self.scheme, self.host)
        };
        let payload_hash =
            if call.body.is_empty() { sigv4::EMPTY_SHA256.to_string() } else { sigv4::sha256_hex(call.body) };
        let has_body = matches!(call.method, "PUT" | "POST");
        let mut attempt = 1;
        loop {
            let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
            let headers = [
                ("host", self.host.as_str()),
                ("x-amz-content-sha256", payload_hash.as_str()),
                ("x-amz-date", amz_date.as_str()),
            ];
            let signed = sigv4::Request {
                method: call.method,
                canonical_uri: &path,
                canonical_query: &query,
                headers: &headers,
                payload_sha256: &payload_hash,
            };
            let authorization = sigv4::authorization(&self.creds, &self.region, "s3", &amz_date, &signed);
            let mut req = self
                .agent
                .request(call.method, &url)
                .set("Host", &self.host)
                .set("x-amz-content-sha256", &payload_hash)
                .set("x-amz-date", &amz_date)
                .set("Authorization", &authorization);
            let result = if has_body {
                req = req.set("Content-Length", &call.body.len().to_string());
                req.send_bytes(call.body)
            } else {
                req.call()
            };
            let failure = match result {
                Ok(resp) if (200..300).contains(&resp.status()) => return Ok(resp),
                Ok(resp) | Err(ureq::Error::Status(_, resp)) => status_failure(resp),
                Err(ureq::Error::Transport(t)) => transport_failure(&t, &self.endpoint()),
            };
            let retry = match &failure {
                Failure::Status { status, .. } => matches!(status, 500 | 502 | 503 | 504),
                Failure::Transport { retry, .. } => *retry,
            };
            if !retry || attempt >= ATTEMPTS {
                return Err(failure);
            }
            std::thread::sleep(Duration::from_millis(250 << (2 * (attempt - 1))));
            attempt += 1;
        }
    }

    fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    fn create_multipart(&self, key: &str, location: &str) -> Result<String> {
        let call = Call { method: "POST", key: Some(key), query: &[("uploads", "")], body: b"" };
        let resp = self.execute(&call).map_err(|f| f.into_error("CreateMultipartUpload", location))?;
        let root = read_xml(resp, "CreateMultipartUpload", location)?;
        root.child_text("UploadId")
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::Io(format!("S3 CreateMultipartUpload {location}: no UploadId in the response")))
    }

    fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: &[u8], location: &str) -> Result<String> {
        let n = number.to_string();
        let query = [("partNumber", n.as_str()), ("uploadId", upload_id)];
        let call = Call { method: "PUT", key: Some(key), query: &query, body: data };
        let op = format!("UploadPart {number}");
        let resp = self.execute(&call).map_err(|f| f.into_error(&op, location))?;
        let etag = resp.header("ETag").map(str::to_string);
        drain(resp);
        etag.ok_or_else(|| Error::Io(format!("S3 {op} {location}: no ETag in the response")))
    }

    /// Completes an upload of `size` bytes in total.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
        size: u64,
        location: &str,
    ) -> Result<()> {
        let mut body = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for (i, etag) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><ETag>{}</ETag><PartNumber>{}</PartNumber></Part>",
                xml::escape(etag),
                i + 1
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let call = Call { method: "POST", key: Some(key), query: &[("uploadId", upload_id)], body: body.as_bytes() };
        let resp = match self.execute(&call) {
            Ok(resp) => resp,
            // A request that was sent again after a broken connection may find the upload
            // completed by the first one: then the object is there.
            Err(f) if f.code() == "NoSuchUpload" && self.head(key).ok().flatten() == Some(size) => return Ok(()),
            Err(f) => return Err(f.into_error("CompleteMultipartUpload", location)),
        };
        // The store may answer 200 and report a failure in the body.
        let root = read_xml(resp, "CompleteMultipartUpload", location)?;
        if root.name == "Error" {
            let failure = Failure::Status {
                status: 200,
                code: root.child_text("Code").unwrap_or_default().to_string(),
                message: root.child_text("Message").unwrap_or_default().to_string(),
            };
            return Err(failure.into_error("CompleteMultipartUpload", location));
        }
        Ok(())
    }

    fn abort_multipart(&self, key: &str, upload_id: &str, location: &str) -> Result<()> {
        let call = Call { method: "DELETE", key: Some(key), query: &[("uploadId", upload_id)], body: b"" };
        match self.execute(&call) {
            Ok(resp) => {
                drain(resp);
                Ok(())
            }
            Err(f) if f.code() == "NoSuchUpload" => Ok(()),
            Err(f) => Err(f.into_error("AbortMultipartUpload", location)),
        }
    }

    /// The size of the object at full key `key`, `None` when it does not exist.
    fn head(&self, key: &str) -> std::result::Result<Option<u64>, Failure> {
        let call = Call { method: "HEAD", key: Some(key), query: &[], body: b"" };
        match self.execute(&call) {
            Ok(resp) => {
                let len = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
                let error = Error::Io("no Content-Length in the response".into());
                len.map(Some).ok_or(Failure::Transport { error, retry: false })
            }
            Err(f) if f.is_404() => Ok(None),
            Err(f) => Err(f),
        }
    }

    fn put_object(&self, key: &str, data: &[u8], location: &str) -> Result<()> {
        let call = Call { method: "PUT", key: Some(key), query: &[], body: data };
        let resp = self.execute(&call).map_err(|f| f.into_error("PUT", location))?;
        drain(resp);
        Ok(())
    }
}

/// Reads the rest of a small response so its connection can be reused.
fn drain(resp: ureq::Response) {
    let _ = std::io::copy(&mut resp.into_reader().take(ERROR_BODY_LIMIT), &mut std::io::sink());
}

/// The body of a response that is a small XML document (at most 64 MiB is read).
fn read_body(resp: ureq::Response, op: &str, location: &str) -> Result<String> {
    let mut body = String::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_string(&mut body)
        .map_err(|e| Error::Io(format!("S3 {op} {location}: reading the response: {e}")))?;
    Ok(body)
}

fn read_xml(resp: ureq::Response, op: &str, location: &str) -> Result<xml::Element> {
    let body = read_body(resp, op, location)?;
    xml::parse(&body).map_err(|e| Error::Io(format!("S3 {op} {location}: malformed XML response: {e}")))
}

fn status_failure(resp: ureq::Response) -> Failure {
    let status = resp.status();
    let region = resp.header("x-amz-bucket-region").map(str::to_string);
    let status_text = resp.status_text().to_string();
    let mut body = Vec::new();
    let _ = resp.into_reader().take(ERROR_BODY_LIMIT).read_to_end(&mut body);
    let parsed = xml::parse(&String::from_utf8_lossy(&body)).ok();
    let text = |name: &str| parsed.as_ref().and_then(|e| e.child_text(name)).unwrap_or_default().to_string();
    let code = text("Code");
    let mut message = text("Message");
    if message.is_empty() && code.is_empty() {
        message = status_text;
    }
    if let Some(region) = region.filter(|_| status == 301 || code == "AuthorizationHeaderMalformed") {
        message.push_str(&format!(" (the bucket is in region {region})"));
    }
    Failure::Status { status, code, message }
}

/// Classifies a transport error. A connection that broke during a request (typically a kept-alive
/// one the server had closed) is tried again; a refused connection or a timeout is reported.
fn transport_failure(t: &ureq::Transport, endpoint: &str) -> Failure {
    let timed_out = std::error::Error::source(t)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
    let (error, retry) = match t.kind() {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
            (Error::Connection(format!("cannot connect to the endpoint {endpoint}: {t}")), false)
        }
        _ if timed_out => (Error::Timeout(format!("endpoint {endpoint}: {t}")), false),
        ureq::ErrorKind::Io | ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => {
            (Error::Connection(format!("endpoint {endpoint}: {t}")), true)
        }
        _ => (Error::Io(format!("endpoint {endpoint}: {t}")), false),
    };
    Failure::Transport { error, retry }
}

/// An object being written: buffered up to one part, then sent part by part.
struct S3Writer {
    client: Arc<Client>,
    key: String,
    location: String,
    buf: Vec<u8>,
    upload_id: Option<String>,
    etags: Vec<String>,
    written: u64,
    committed: bool,
}

impl S3Writer {
    /// Sends the buffer as the next part, starting the multipart upload first if needed.
    fn send_part(&mut self) -> Result<()> {
        let number = self.etags.len() as u32 + 1;
        if number > MAX_PARTS {
            return Err(Error::Io(format!(
                "{}: objects are limited to {MAX_PARTS} parts of {} MiB",
                self.location,
                PART_SIZE >> 20
            )));
        }
        if self.upload_id.is_none() {
            self.upload_id = Some(self.client.create_multipart(&self.key, &self.location)?);
        }
        let id = self.upload_id.as_deref().expect("started above");
        let etag = self.client.upload_part(&self.key, id, number, &self.buf, &self.location)?;
        self.etags.push(etag);
        self.buf.clear();
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sent only once more data follows: an object of exactly one part
        // still goes with a single PUT.
        if self.buf.len() == PART_SIZE {
            self.send_part().map_err(std::io::Error::other)?;
        }
        let n = data.len().min(PART_SIZE - self.buf.len());
        let needed = self.buf.len() + n;
        if needed > self.buf.capacity() {
            let target = needed.max(2 * self.buf.capacity()).min(PART_SIZE);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> Result<u64> {
        match self.upload_id.clone() {
            None => self.client.put_object(&self.key, &self.buf, &self.location)?,
            Some(id) => {
                if !self.buf.is_empty() {
                    self.send_part()?;
                }
                self.client.complete_multipart(&self.key, &id, &self.etags, self.written, &self.location)?;
            }
        }
        self.committed = true;
        Ok(self.written)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.committed {
            if let Some(id) = self.upload_id.take() {
                let _ = self.client.abort_multipart(&self.key, &id, &self.location);
            }
        }
    }
}

impl Storage for S3Storage {
    fn init(&self) -> Result<()> {
        self.create_bucket()
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    fn location(&self, key: &str) -> String {
        self.client.location(key)
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            key: self.client.full_key(key),
            location: self.location(key),
            buf: Vec::new(),
            upload_id: None,
            etags: Vec::new(),
            written: 0,
            committed: false,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        let location = self.location(key);
        let full = self.client.full_key(key);
        let call = Call { method: "GET", key: Some(&full), query: &[], body: b"" };
        match self.client.execute(&call) {
            Ok(resp) => Ok(Box::new(resp.into_reader())),
            Err(Failure::Status { status: 404, code, message }) => {
                Err(Error::NotFound(format!("{location} ({})", if code.is_empty() { message } else { code })))
            }
            Err(f) => Err(f.into_error("GET", &location)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        let location = self.location(key);
        let full = self.client.full_key(key);
        self.client.head(&full).map_err(|f| f.into_error("HEAD", &location))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let c = &self.client;
        let full = format!("{}{prefix}", c.prefix);
        let location = c.location(prefix);
        let page = self.page_size.map(|n| n.clamp(1, 1000).to_string());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", full.as_str())];
            if let Some(p) = &page {
                query.push(("max-keys", p));
            }
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let call = Call { method: "GET", key: None, query: &query, body: b"" };
            let resp = c.execute(&call).map_err(|f| f.into_error("ListObjectsV2", &location))?;
            let page = parse_list(&read_body(resp, "ListObjectsV2", &location)?)
                .map_err(|e| Error::Io(format!("S3 ListObjectsV2 {location}: {e}")))?;
            for (key, size) in page.entries {
                // Zero-byte "folder" markers (keys ending in '/') are not objects of a repository.
                if let Some(rel) = key.strip_prefix(&c.prefix).filter(|k| !k.is_empty() && !k.ends_with('/')) {
                    out.push((rel.to_string(), size));
                }
            }
            match (page.truncated, page.next_token) {
                (false, _) => break,
                (true, Some(next)) if Some(&next) != token.as_ref() && !next.is_empty() => token = Some(next),
                (true, _) => {
                    return Err(Error::Io(format!(
                        "S3 ListObjectsV2 {location}: a truncated listing without a new NextContinuationToken"
                    )))
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let location = self.location(key);
        let full = self.client.full_key(key);
        let call = Call { method: "DELETE", key: Some(&full), query: &[], body: b"" };
        match self.client.execute(&call) {
            Ok(resp) => {
                drain(resp);
                Ok(())
            }
            Err(f) if f.is_404() && f.code() != "NoSuchBucket" => Ok(()),
            Err(f) => Err(f.into_error("DELETE", &location)),
        }
    }
}

/// One page of a ListObjectsV2 response.
#[derive(Debug, PartialEq, Eq)]
struct ListPage {
    entries: Vec<(String, u64)>,
    truncated: bool,
    next_token: Option<String>,
}

fn parse_list(body: &str) -> std::result::Result<ListPage, String> {
    let root = xml::parse(body).map_err(|e| format!("malformed XML response: {e}"))?;
    if root.name != "ListBucketResult" {
        return Err(format!("unexpected <{}> response", root.name));
    }
    let mut entries = Vec::new();
    for c in root.children("Contents") {
        let key = c.child_text("Key").ok_or("a <Contents> without <Key>")?;
        let size = c.child_text("Size").ok_or("a <Contents> without <Size>")?;
        let size = size.trim().parse::<u64>().map_err(|_| format!("bad <Size> {size:?} of {key:?}"))?;
        entries.push((key.to_string(), size));
    }
    Ok(ListPage {
        entries,
        truncated: root.child_text("IsTruncated").map(str::trim) == Some("true"),
        next_token: root.child_text("NextContinuationToken").map(str::to_string),
    })
}

#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_xml(doc: &str) -> std::result::Result<(), String> {
    let root = xml::parse(doc)?;
    let _ = root.child_text("Code");
    let _ = root.children("Contents").count();
    Ok(())
}

#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_list(body: &str) -> std::result::Result<Vec<(String, u64)>, String> {
    parse_list(body).map(|p| p.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_pages() {
        let body = concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "\n",
            r#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>"#,
            "<KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><IsTruncated>true</IsTruncated>",
            "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>",
            "<Contents><Key>p/a &amp; b</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>",
            "<ETag>&quot;x&quot;</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass></Contents>",
            "<Contents><Key>p/grüße &lt;1&gt;</Key><Size>0</Size></Contents>",
            "<Contents><Key>p/ spaced </Key><Size>12345678901</Size></Contents></ListBucketResult>",
        );
        let page = parse_list(body).unwrap();
        assert_eq!(
            page.entries,
            vec![("p/a & b".into(), 5), ("p/grüße <1>".into(), 0), ("p/ spaced ".into(), 12_345_678_901)]
        );
        assert!(page.truncated);
        assert_eq!(page.next_token.as_deref(), Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="));

        let last = parse_list("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>").unwrap();
        assert_eq!(last, ListPage { entries: vec![], truncated: false, next_token: None });

        assert!(parse_list("<Error><Code>NoSuchBucket</Code></Error>").unwrap_err().contains("<Error>"));
        assert!(parse_list("<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>").is_err());
        assert!(parse_list("<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>")
            .is_err());
        assert!(parse_list("<ListBucketResult>").is_err());
    }

    #[test]
    fn parses_repository_urls() {
        assert_eq!(parse_url("s3://bucket").unwrap(), ("bucket".into(), "".into()));
        assert_eq!(parse_url("s3://bucket/").unwrap(), ("bucket".into(), "".into()));
        assert_eq!(parse_url("s3://my.bucket/a/b/").unwrap(), ("my.bucket".into(), "a/b".into()));
        for bad in ["bucket/x", "s3://", "s3:///x", "s3://bu cket/x", "s3://b/a//b", "s3://b/../x", "https://b/x"] {
            assert!(matches!(parse_url(bad), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:9000").unwrap(),
            ("http", "127.0.0.1:9000".to_string(), String::new())
        );
        assert_eq!(
            parse_endpoint("HTTPS://Storage.Example.com/s3/").unwrap(),
            ("https", "storage.example.com".to_string(), "/s3".to_string())
        );
        assert_eq!(parse_endpoint("http://[::1]:9000").unwrap().1, "[::1]:9000");
        for bad in ["127.0.0.1:9000", "ftp://x", "http://", "http://u:p@host", "http://h/?x", "http://h:port"] {
            assert!(matches!(parse_endpoint(bad), Err(Error::Config(_))), "{bad}");
        }
    }

    fn config(url: &str) -> Config {
        let mut cfg = Config::default();
        cfg.set("backup_s3_url", url).unwrap();
        cfg.set("backup_s3_access_key_id", "AKIDEXAMPLE").unwrap();
        cfg.set("backup_s3_secret_access_key", "secret-value").unwrap();
        cfg
    }

    #[test]
    fn configuration_and_addressing() {
        let s = S3Storage::from_config(&config("s3://backups/prod/db")).unwrap();
        assert_eq!(s.kind(), "s3");
        assert_eq!(s.location("full-1/manifest.json"), "s3://backups/prod/db/full-1/manifest.json");
        assert_eq!(s.client.host, "backups.s3.us-east-1.amazonaws.com");
        assert_eq!(s.client.bucket_path, "");
        assert!(!format!("{s:?}").contains("secret-value"));

        let mut cfg = config("s3://my.backups");
        cfg.set("backup_s3_region", "eu-west-1").unwrap();
        let s = S3Storage::from_config(&cfg).unwrap();
        assert_eq!(
            (s.client.host.as_str(), s.client.bucket_path.as_str()),
            ("s3.eu-west-1.amazonaws.com", "/my.backups")
        );
        assert_eq!(s.location("k"), "s3://my.backups/k");

        cfg.set("backup_s3_endpoint", "http://127.0.0.1:9000/base/").unwrap();
        let s = S3Storage::from_config(&cfg).unwrap();
        assert_eq!((s.client.host.as_str(), s.client.bucket_path.as_str()), ("127.0.0.1:9000", "/base/my.backups"));

        let mut cfg = config("s3://b/p");
        cfg.backup_s3_secret_access_key = None;
        let e = S3Storage::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("backup_s3_secret_access_key"), "{e}");
        cfg.backup_s3_access_key_id = None;
        let e = S3Storage::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("backup_s3_access_key_id"), "{e}");
        let mut cfg = config("s3://b/p");
        cfg.backup_s3_region = "us east".into();
        assert!(matches!(S3Storage::from_config(&cfg), Err(Error::Config(_))));
        assert!(matches!(S3Storage::from_config(&Config::default()), Err(Error::Config(_))));
    }

    #[test]
    fn rejects_bad_keys_before_any_request() {
        let mut cfg = config("s3://b/p");
        cfg.set("backup_s3_endpoint", "http://127.0.0.1:1").unwrap();
        let s = S3Storage::from_config(&cfg).unwrap();
        for bad in ["", "/abs", "a/../b", "a//b"] {
            assert!(matches!(s.create(bad), Err(Error::InvalidArgument(_))), "{bad}");
            assert!(matches!(s.open(bad), Err(Error::InvalidArgument(_))), "{bad}");
            assert!(matches!(s.delete(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }

    #[test]
    fn status_errors_name_the_code_and_location() {
        let f = Failure::Status { status: 403, code: "SignatureDoesNotMatch".into(), message: "no match".into() };
        let e = f.into_error("GET", "s3://b/k");
        assert!(matches!(&e, Error::Auth(_)), "{e:?}");
        assert!(e.to_string().contains("S3 GET s3://b/k: HTTP 403 SignatureDoesNotMatch: no match"), "{e}");
        let f = Failure::Status { status: 403, code: "AccessDenied".into(), message: "Access Denied".into() };
        assert!(matches!(f.into_error("GET", "s3://b/k"), Error::Io(_)));
        let f = Failure::Status { status: 500, code: "InternalError".into(), message: "oops".into() };
        let e = f.into_error("PUT", "s3://b/k");
        assert!(matches!(&e, Error::Io(m) if m == "S3 PUT s3://b/k: HTTP 500 InternalError: oops"), "{e:?}");
    }
}
