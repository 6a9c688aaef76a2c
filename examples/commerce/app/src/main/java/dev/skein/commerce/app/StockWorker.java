package dev.skein.commerce.app;

import dev.skein.commerce.events.StockRequest;
import dev.skein.commerce.events.Topics;
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

/**
 * The stock worker (profile stock, group stock) on stock-requests, keyed by product id. The decrement
 * is a conditional UPDATE (available >= quantity), so two orders for the last item cannot both
 * succeed even if they were processed at once; the loser's order is REJECTED. Insufficient stock is
 * a business outcome, recorded and not retried; a database failure is a system failure, retried.
 */
@Component
@Profile("stock")
public class StockWorker {
    static final String GROUP = "stock";
    private static final Logger log = LoggerFactory.getLogger(StockWorker.class);
    private final Store store;
    private final TransactionTemplate tx;

    public StockWorker(Store store, TransactionTemplate tx) {
        this.store = store;
        this.tx = tx;
    }

    @RetryableTopic(attempts = "${commerce.retry.attempts:3}",
            backOff = @BackOff(delayString = "${commerce.retry.delay-ms:200}", multiplier = 2.0),
            topicSuffixingStrategy = TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE,
            retryTopicSuffix = "-stock-retry", dltTopicSuffix = "-stock-dlt",
            numPartitions = "6", replicationFactor = "1", dltStrategy = DltStrategy.FAIL_ON_ERROR)
    @KafkaListener(topics = Topics.STOCK_REQUESTS, groupId = GROUP)
    public void onStockRequest(ConsumerRecord<String, StockRequest> record) {
        StockRequest req = record.value();
        tx.executeWithoutResult(status -> {
            if (!store.firstTime(GROUP, req.eventId())) {
                log.info("duplicate stock request {} for order {} skipped", req.eventId(), req.orderId());
                return;
            }
            int taken = store.jdbc().update(
                    "UPDATE stock SET available = available - ? WHERE product_id = ? AND available >= ?",
                    req.quantity(), req.productId(), req.quantity());
            String outcome = taken == 1 ? "RESERVED" : "REJECTED";
            store.jdbc().update("UPDATE orders SET status = ? WHERE order_id = ? AND status = 'CREATED'", outcome, req.orderId());
            store.seen(GROUP, req.orderId(), req.type(), req.eventId(), record);
            if (taken == 1) {
                log.info("order {}: {} x{} reserved", req.orderId(), req.productId(), req.quantity());
            } else {
                log.info("order {} rejected: insufficient stock of {} (business failure, not retried)", req.orderId(), req.productId());
            }
        });
    }

    @DltHandler
    public void dead(ConsumerRecord<?, ?> record) {
        DeadLetters.log(GROUP, record);
    }
}
