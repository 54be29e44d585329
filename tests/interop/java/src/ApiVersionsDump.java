import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.common.message.ApiVersionsResponseData;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.ByteBufferAccessor;
import org.apache.kafka.common.requests.ApiVersionsRequest;
import org.apache.kafka.common.requests.ApiVersionsResponse;
import org.apache.kafka.common.requests.RequestHeader;
import org.apache.kafka.common.requests.ResponseHeader;

/**
 * Sends one ApiVersions request over a plain socket and prints the decoded response in a
 * line-oriented form, using Apache Kafka's own client codecs.
 *
 * <pre>
 * java -cp 'lib/*:build' ApiVersionsDump HOST:PORT [VERSION]
 * </pre>
 *
 * VERSION defaults to the newest the client knows. A VERSION newer than the client knows
 * (e.g. 127) is hand-encoded as a flexible v3+ body, as a future client would send it; the
 * reply is then decoded as v0 (KIP-511: the broker answers UNSUPPORTED_VERSION in v0 with
 * its ranges).
 *
 * Output lines:
 *   request_version N
 *   response_version N
 *   error_code N
 *   throttle_time_ms N
 *   api KEY NAME MIN MAX
 *   supported_feature NAME MIN MAX
 *   finalized_features_epoch N
 *   finalized_feature NAME MIN MAX
 *   zk_migration_ready BOOL
 */
public class ApiVersionsDump {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: ApiVersionsDump HOST:PORT [VERSION]");
            System.exit(2);
        }
        String[] hp = args[0].split(":");
        short latest = ApiKeys.API_VERSIONS.latestVersion();
        short version = args.length > 1 ? Short.parseShort(args[1]) : latest;
        int correlationId = 7;
        ByteBuffer req;
        if (version <= latest) {
            RequestHeader header = new RequestHeader(ApiKeys.API_VERSIONS, version, "runnel-interop", correlationId);
            ApiVersionsRequest request = new ApiVersionsRequest.Builder(version).build(version);
            req = request.serializeWithHeader(header);
        } else {
            req = tooNewRequest(version, correlationId);
        }
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(hp[0], Integer.parseInt(hp[1])), 10_000);
            s.setSoTimeout(10_000);
            DataOutputStream out = new DataOutputStream(s.getOutputStream());
            out.writeInt(req.remaining());
            out.write(req.array(), req.arrayOffset() + req.position(), req.remaining());
            out.flush();
            DataInputStream in = new DataInputStream(s.getInputStream());
            int size = in.readInt();
            byte[] body = new byte[size];
            in.readFully(body);
            ByteBuffer buf = ByteBuffer.wrap(body);
            // ApiVersions responses always use response header v0 (no tagged fields).
            ResponseHeader rh = ResponseHeader.parse(buf, (short) 0);
            if (rh.correlationId() != correlationId) {
                throw new IOException("correlation id mismatch: sent " + correlationId + ", got " + rh.correlationId());
            }
            short respVersion = version <= latest ? version : 0;
            ApiVersionsResponse resp = ApiVersionsResponse.parse(new ByteBufferAccessor(buf), respVersion);
            if (buf.hasRemaining()) {
                throw new IOException(buf.remaining() + " trailing bytes after the ApiVersions v" + respVersion + " response");
            }
            ApiVersionsResponseData d = resp.data();
            System.out.println("request_version " + version);
            System.out.println("response_version " + respVersion);
            System.out.println("error_code " + d.errorCode());
            System.out.println("throttle_time_ms " + d.throttleTimeMs());
            for (ApiVersionsResponseData.ApiVersion v : d.apiKeys()) {
                String name = ApiKeys.hasId(v.apiKey()) ? ApiKeys.forId(v.apiKey()).name : "UNKNOWN";
                System.out.println("api " + v.apiKey() + " " + name + " " + v.minVersion() + " " + v.maxVersion());
            }
            if (respVersion >= 3) {
                for (ApiVersionsResponseData.SupportedFeatureKey f : d.supportedFeatures()) {
                    System.out.println("supported_feature " + f.name() + " " + f.minVersion() + " " + f.maxVersion());
                }
                System.out.println("finalized_features_epoch " + d.finalizedFeaturesEpoch());
                for (ApiVersionsResponseData.FinalizedFeatureKey f : d.finalizedFeatures()) {
                    System.out.println("finalized_feature " + f.name() + " " + f.minVersionLevel() + " " + f.maxVersionLevel());
                }
                System.out.println("zk_migration_ready " + d.zkMigrationReady());
            }
        }
    }

    /** Request header v2 + an ApiVersions v3+-shaped flexible body, at a version this client does not know. */
    private static ByteBuffer tooNewRequest(short version, int correlationId) {
        byte[] clientId = "runnel-interop".getBytes(StandardCharsets.UTF_8);
        byte[] swName = "apache-kafka-java".getBytes(StandardCharsets.UTF_8);
        byte[] swVer = "4.x".getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(64 + clientId.length + swName.length + swVer.length);
        b.putShort(ApiKeys.API_VERSIONS.id);
        b.putShort(version);
        b.putInt(correlationId);
        b.putShort((short) clientId.length);
        b.put(clientId);
        b.put((byte) 0); // header tagged fields
        b.put((byte) (swName.length + 1)); // compact string
        b.put(swName);
        b.put((byte) (swVer.length + 1));
        b.put(swVer);
        b.put((byte) 0); // body tagged fields
        b.flip();
        return b;
    }
}
