package dev.skein.commerce.app;

import dev.skein.commerce.events.EventTypes;
import dev.skein.commerce.events.OrderEvent;
import dev.skein.commerce.events.Topics;
import java.net.SocketTimeoutException;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.context.annotation.Profile;
import org.springframework.kafka.annotation.BackOff;
import org.springframework.kafka.annotation.DltHandler;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.annotation.RetryableTopic;
import org.springframework.kafka.retrytopic.DltStrategy;
import org.springframework.kafka.retrytopic.TopicSuffixingStrategy;
import org.springframework.stereotype.Component;
import org.springframework.transaction.support.TransactionTemplate;

/**
 * Notification (profile notification, group notification): every event of an order is notified to a
 * downstream service. Fault injection, deterministic: for a payment whose userId starts with
 * {@code slow-} the downstream times out ({@link SocketTimeoutException} after
 * commerce.downstream-timeout-ms) on every attempt, a system failure: retried through
 * orders-notification-retry-0 and -1 with a growing delay, then published to orders-notification-dlt.
 */
@Component
@Profile("notification")
public class NotificationListener {
    static final String GROUP = "notification";
    private static final Logger log = LoggerFactory.getLogger(NotificationListener.class);
    private final Store store;
    private final TransactionTemplate tx;
    private final long downstreamTimeoutMs;

    public NotificationListener(Store store, TransactionTemplate tx,
            @Value("${commerce.downstream-timeout-ms:500}") long downstreamTimeoutMs) {
        this.store = store;
        this.tx = tx;
        this.downstreamTimeoutMs = downstreamTimeoutMs;
    }

    @RetryableTopic(attempts = "${commerce.retry.attempts:3}",
            backOff = @BackOff(delayString = "${commerce.retry.delay-ms:200}", multiplier = 2.0),
            topicSuffixingStrategy = TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE,
            retryTopicSuffix = "-notification-retry", dltTopicSuffix = "-notification-dlt",
            numPartitions = "6", replicationFactor = "1", dltStrategy = DltStrategy.FAIL_ON_ERROR)
    @KafkaListener(topics = Topics.ORDERS, groupId = GROUP)
    public void onOrderEvent(ConsumerRecord<String, OrderEvent> record) throws SocketTimeoutException {
        OrderEvent e = record.value();
        if (store.processed(GROUP, e.eventId())) { // a redelivery: do not notify twice
            log.info("duplicate {} {} of order {} skipped", e.type(), e.eventId(), e.orderId());
            return;
        }
        callDownstream(e);
        tx.executeWithoutResult(status -> {
            if (!store.firstTime(GROUP, e.eventId())) {
                log.info("duplicate {} {} of order {} skipped", e.type(), e.eventId(), e.orderId());
                return;
            }
            store.seen(GROUP, e.orderId(), e.type(), e.eventId(), record);
            log.info("notified user {}: {} for order {}", e.userId(), e.type(), e.orderId());
        });
    }

    /** The downstream call: instant, except the injected timeout. */
    private void callDownstream(OrderEvent e) throws SocketTimeoutException {
        if (EventTypes.PAYMENT_COMPLETED.equals(e.type()) && e.userId() != null && e.userId().startsWith("slow-")) {
            try {
                Thread.sleep(downstreamTimeoutMs);
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
            }
            throw new SocketTimeoutException("notification downstream timed out after " + downstreamTimeoutMs
                    + " ms (user " + e.userId() + ", order " + e.orderId() + ")");
        }
    }

    @DltHandler
    public void dead(ConsumerRecord<?, ?> record) {
        DeadLetters.log(GROUP, record);
    }
}
