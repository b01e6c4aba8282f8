//! OTLP/gRPC transport over tonic's generated `TraceServiceClient` and `LogsServiceClient`:
//! one attempt in, one [`Outcome`] out. Retrying is the caller's job (`super::export_batch`).

use super::config::{Compression, OtlpConfig};
use super::encode::{grpc_retry_delay, partial_success_of};
use super::export::Request;
use super::logs::partial_success_of_logs;
use super::Outcome;
use crate::convert::retry::{classify_grpc, Verdict};
use crate::convert::sink::SinkError;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataKey, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Sends export requests to one OTLP/gRPC server.
// Not `Debug`: the metadata holds header values.
#[derive(Clone)]
pub(crate) struct GrpcTransport {
    endpoint: Endpoint,
    /// Created on first use: a tonic `Channel` spawns its worker task, so it needs the runtime
    /// `send` runs on, which `OtlpSink::new` may not have. Shared by clones.
    channel: Arc<OnceLock<Channel>>,
    metadata: MetadataMap,
    compression: Compression,
    timeout: Duration,
    /// Caps a server's `RetryInfo` delay.
    retry_cap: Duration,
}

impl GrpcTransport {
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, SinkError> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| SinkError::Config(format!("gRPC endpoint: {e}")))?
            .connect_timeout(config.timeout)
            .timeout(config.timeout);
        if config.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| SinkError::Config(format!("gRPC TLS: {e}")))?;
        }
        let mut metadata = MetadataMap::new();
        for (i, (k, v)) in config.headers.iter().enumerate() {
            let bad_key = || {
                SinkError::Config(format!(
                    "header {}: the key is not valid gRPC metadata",
                    i + 1
                ))
            };
            let bad_value =
                || SinkError::Config(format!("header {} ({k}): the value is not valid", i + 1));
            if k.ends_with("-bin") {
                // gRPC binary metadata: the value's bytes, base64-encoded on the wire by tonic.
                let key = MetadataKey::from_bytes(k.as_bytes()).map_err(|_| bad_key())?;
                metadata.append_bin(key, BinaryMetadataValue::from_bytes(v.as_bytes()));
            } else {
                let key = MetadataKey::from_bytes(k.as_bytes()).map_err(|_| bad_key())?;
                let value: AsciiMetadataValue = v.parse().map_err(|_| bad_value())?;
                metadata.append(key, value);
            }
        }
        Ok(GrpcTransport {
            endpoint,
            channel: Arc::new(OnceLock::new()),
            metadata,
            compression: config.compression,
            timeout: config.timeout,
            retry_cap: config.retry_deadline,
        })
    }

    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }

    /// `message` with the configured metadata and the timeout.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        request
    }

    /// One `Export` call of the traces or the logs service.
    pub(crate) async fn attempt(&self, req: Request) -> Outcome {
        let gzip = self.compression == Compression::Gzip;
        let result = match req {
            Request::Traces(r) => {
                let mut client = TraceServiceClient::new(self.channel())
                    .accept_compressed(CompressionEncoding::Gzip);
                if gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                client
                    .export(self.request(r))
                    .await
                    .map(|resp| partial_success_of(resp.into_inner()))
            }
            Request::Logs(r) => {
                let mut client = LogsServiceClient::new(self.channel())
                    .accept_compressed(CompressionEncoding::Gzip);
                if gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                client
                    .export(self.request(r))
                    .await
                    .map(|resp| partial_success_of_logs(resp.into_inner()))
            }
        };
        let status = match result {
            Ok(partial) => return Outcome::Accepted(partial),
            Err(status) => status,
        };
        let code = status.code();
        if let Some(cause) = transport_failure(&status) {
            // No gRPC status came back: the call failed below gRPC (refused or reset
            // connections, an HTTP/1 server or a proxy that does not speak HTTP/2). Tonic
            // reports those as UNKNOWN, which the spec's table would make fatal; the backend
            // never saw the data, so it is "unreachable, try later", not "rejected".
            return Outcome::Retry {
                reason: format!(
                    "gRPC transport failure: {}",
                    super::http::error_chain(cause)
                ),
                after: None,
            };
        }
        match classify_grpc(code as i32) {
            Verdict::Success => Outcome::Accepted(Default::default()),
            Verdict::Retry | Verdict::Throttle => Outcome::Retry {
                reason: format!("gRPC {code:?}: {}", status.message()),
                after: grpc_retry_delay(status.details()).map(|d| d.min(self.retry_cap)),
            },
            // `classify_grpc` has no redirects.
            Verdict::Fatal | Verdict::Redirect => Outcome::Fatal {
                status: format!("gRPC {code:?} ({})", code as i32),
                body: status.message().to_owned(),
            },
        }
    }
}

/// The transport error under a client-side status, if that is what it is: statuses decoded
/// from a server's answer carry no source, those tonic makes from a failed connection or
/// HTTP/2 exchange carry a `tonic::transport::Error` or an I/O error.
fn transport_failure(status: &tonic::Status) -> Option<&(dyn std::error::Error + 'static)> {
    let top = std::error::Error::source(status)?;
    let mut cur = Some(top);
    while let Some(e) = cur {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return Some(top);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::convert::sink::otlp::encode::{
        ProtoAny, ProtoDuration, RetryInfo, RpcStatus, RETRY_INFO_TYPE,
    };
    use prost::Message as _;

    pub(crate) fn retry_info_details(delay: Duration) -> Vec<u8> {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![
                ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![1, 2, 3],
                },
                ProtoAny {
                    type_url: RETRY_INFO_TYPE.into(),
                    value: info.encode_to_vec(),
                },
            ],
        }
        .encode_to_vec()
    }

    #[test]
    fn retry_info_is_decoded() {
        let d = Duration::from_millis(1500);
        assert_eq!(grpc_retry_delay(&retry_info_details(d)), Some(d));
        assert_eq!(grpc_retry_delay(b""), None);
        assert_eq!(grpc_retry_delay(b"\xff\xff"), None);
        let no_info = RpcStatus {
            code: 14,
            message: String::new(),
            details: vec![],
        };
        assert_eq!(grpc_retry_delay(&no_info.encode_to_vec()), None);
    }

    #[test]
    fn metadata_from_headers() {
        let mut c = OtlpConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            headers: vec![
                ("authorization".into(), "Bearer x".into()),
                ("trace-bin".into(), "raw".into()),
            ],
            ..OtlpConfig::default()
        };
        let t = GrpcTransport::new(&c).unwrap();
        assert_eq!(t.metadata.get("authorization").unwrap(), "Bearer x");
        assert_eq!(
            t.metadata.get_bin("trace-bin").unwrap().to_bytes().unwrap(),
            "raw".as_bytes()
        );
        c.headers = vec![("k".into(), "bad\u{7f}".into())];
        let Err(e) = GrpcTransport::new(&c) else {
            panic!("accepted a bad value")
        };
        assert!(!e.to_string().contains("bad"), "{e}");
    }
}
