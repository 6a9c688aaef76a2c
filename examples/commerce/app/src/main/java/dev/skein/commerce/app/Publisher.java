package dev.skein.commerce.app;

import dev.skein.commerce.events.EventHeaders;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.stereotype.Component;

/** Publishes an event with its traceId and eventType headers and waits for the broker's acks=all answer. */
@Component
public class Publisher {
    private final KafkaTemplate<Object, Object> kafka;

    public Publisher(KafkaTemplate<Object, Object> kafka) {
        this.kafka = kafka;
    }

    public void publish(String topic, String key, String eventType, String traceId, Object event) {
        ProducerRecord<Object, Object> record = new ProducerRecord<>(topic, key, event);
        record.headers().add(EventHeaders.TRACE_ID, traceId.getBytes(StandardCharsets.UTF_8));
        record.headers().add(EventHeaders.EVENT_TYPE, eventType.getBytes(StandardCharsets.UTF_8));
        try {
            kafka.send(record).get(15, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while publishing to " + topic, e);
        } catch (Exception e) {
            throw new IllegalStateException("could not publish to " + topic + ": " + e, e);
        }
    }
}
