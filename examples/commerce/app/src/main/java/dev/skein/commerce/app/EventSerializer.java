package dev.skein.commerce.app;

import org.apache.kafka.common.serialization.Serializer;
import tools.jackson.databind.json.JsonMapper;

/**
 * The producers' value serializer: events as JSON (Jackson 3, no type headers: the consumers know
 * their topic's type), and raw bytes as they are. The bytes case is the dead-letter path: when a
 * record could not be deserialized, Spring's recoverer republishes its original bytes to the DLT.
 */
public class EventSerializer implements Serializer<Object> {
    private final JsonMapper mapper = JsonMapper.builder().build();

    @Override
    public byte[] serialize(String topic, Object data) {
        if (data == null) {
            return null;
        }
        if (data instanceof byte[] bytes) {
            return bytes;
        }
        return mapper.writeValueAsBytes(data);
    }
}
