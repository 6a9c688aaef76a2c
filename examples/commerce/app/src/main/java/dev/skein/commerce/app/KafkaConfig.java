package dev.skein.commerce.app;

import dev.skein.commerce.events.EventHeaders;
import dev.skein.commerce.events.Topics;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.slf4j.MDC;
import org.springframework.boot.kafka.autoconfigure.ConcurrentKafkaListenerContainerFactoryConfigurer;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.config.TopicBuilder;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.listener.RecordInterceptor;

/** Topics (every profile declares them, so any app can start first) and the listener container factory. */
@Configuration
public class KafkaConfig {

    @Bean
    NewTopic ordersTopic() {
        return TopicBuilder.name(Topics.ORDERS).partitions(Topics.PARTITIONS).replicas(1).build();
    }

    @Bean
    NewTopic stockRequestsTopic() {
        return TopicBuilder.name(Topics.STOCK_REQUESTS).partitions(Topics.PARTITIONS).replicas(1).build();
    }

    @Bean
    NewTopic couponAdmissionsTopic() {
        return TopicBuilder.name(Topics.COUPON_ADMISSIONS).partitions(Topics.PARTITIONS).replicas(1).build();
    }

    /**
     * Boot's settings (application.properties) plus one record interceptor: every record's traceId
     * and eventType headers go into the logging MDC while a listener (main, retry or DLT) runs.
     */
    @Bean
    ConcurrentKafkaListenerContainerFactory<Object, Object> kafkaListenerContainerFactory(
            ConcurrentKafkaListenerContainerFactoryConfigurer configurer, ConsumerFactory<Object, Object> consumerFactory) {
        ConcurrentKafkaListenerContainerFactory<Object, Object> factory = new ConcurrentKafkaListenerContainerFactory<>();
        configurer.configure(factory, consumerFactory);
        factory.setRecordInterceptor(new TraceInterceptor());
        return factory;
    }

    static String header(ConsumerRecord<?, ?> record, String name) {
        Header h = record.headers().lastHeader(name);
        return h == null || h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    /** Puts traceId/eventType into the MDC before the listener and clears them after. */
    static final class TraceInterceptor implements RecordInterceptor<Object, Object> {
        @Override
        public ConsumerRecord<Object, Object> intercept(ConsumerRecord<Object, Object> record, Consumer<Object, Object> consumer) {
            String trace = header(record, EventHeaders.TRACE_ID);
            String type = header(record, EventHeaders.EVENT_TYPE);
            MDC.put(EventHeaders.TRACE_ID, trace == null ? "-" : trace);
            MDC.put(EventHeaders.EVENT_TYPE, type == null ? "-" : type);
            return record;
        }

        @Override
        public void afterRecord(ConsumerRecord<Object, Object> record, Consumer<Object, Object> consumer) {
            MDC.remove(EventHeaders.TRACE_ID);
            MDC.remove(EventHeaders.EVENT_TYPE);
        }
    }
}
