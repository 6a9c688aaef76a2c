package dev.skein.commerce.app;

import dev.skein.commerce.events.EventTypes;
import dev.skein.commerce.events.OrderEvent;
import dev.skein.commerce.events.Topics;
import java.time.OffsetDateTime;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.Profile;
import org.springframework.kafka.annotation.BackOff;
import org.springframework.kafka.annotation.DltHandler;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.annotation.RetryableTopic;
import org.springframework.kafka.retrytopic.DltStrategy;
import org.springframework.kafka.retrytopic.TopicSuffixingStrategy;
import org.springframework.stereotype.Component;
import org.springframework.transaction.support.TransactionTemplate;

/** Analytics (profile analytics, group analytics): payments and amount per hour in payment_hourly, in the same transaction as processed_event. */
@Component
@Profile("analytics")
public class AnalyticsListener {
    static final String GROUP = "analytics";
    private static final Logger log = LoggerFactory.getLogger(AnalyticsListener.class);
    private final Store store;
    private final TransactionTemplate tx;

    public AnalyticsListener(Store store, TransactionTemplate tx) {
        this.store = store;
        this.tx = tx;
    }

    @RetryableTopic(attempts = "${commerce.retry.attempts:3}",
            backOff = @BackOff(delayString = "${commerce.retry.delay-ms:200}", multiplier = 2.0),
            topicSuffixingStrategy = TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE,
            retryTopicSuffix = "-analytics-retry", dltTopicSuffix = "-analytics-dlt",
            numPartitions = "6", replicationFactor = "1", dltStrategy = DltStrategy.FAIL_ON_ERROR)
    @KafkaListener(topics = Topics.ORDERS, groupId = GROUP)
    public void onOrderEvent(ConsumerRecord<String, OrderEvent> record) {
        OrderEvent e = record.value();
        if (!EventTypes.PAYMENT_COMPLETED.equals(e.type())) {
            return;
        }
        tx.executeWithoutResult(status -> {
            if (!store.firstTime(GROUP, e.eventId())) {
                log.info("duplicate payment {} of order {} skipped", e.eventId(), e.orderId());
                return;
            }
            store.seen(GROUP, e.orderId(), e.type(), e.eventId(), record);
            store.jdbc().update("INSERT INTO payment_hourly (hour, payments, amount) VALUES (date_trunc('hour', ?), 1, ?)"
                    + " ON CONFLICT (hour) DO UPDATE SET payments = payment_hourly.payments + 1,"
                    + " amount = payment_hourly.amount + EXCLUDED.amount",
                    OffsetDateTime.parse(e.occurredAt()), e.amount());
            log.info("analytics: payment of order {} counted ({} cents)", e.orderId(), e.amount());
        });
    }

    @DltHandler
    public void dead(ConsumerRecord<?, ?> record) {
        DeadLetters.log(GROUP, record);
    }
}
