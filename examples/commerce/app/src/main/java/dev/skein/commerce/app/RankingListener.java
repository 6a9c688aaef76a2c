package dev.skein.commerce.app;

import dev.skein.commerce.events.EventTypes;
import dev.skein.commerce.events.OrderEvent;
import dev.skein.commerce.events.Topics;
import java.util.List;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.Profile;
import org.springframework.data.redis.core.StringRedisTemplate;
import org.springframework.data.redis.core.script.DefaultRedisScript;
import org.springframework.kafka.annotation.BackOff;
import org.springframework.kafka.annotation.DltHandler;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.annotation.RetryableTopic;
import org.springframework.kafka.retrytopic.DltStrategy;
import org.springframework.kafka.retrytopic.TopicSuffixingStrategy;
import org.springframework.stereotype.Component;
import org.springframework.transaction.support.TransactionTemplate;

/**
 * Ranking (profile ranking, group ranking): per-product units sold in the Redis ZSET ranking:sales,
 * from payment-completed events. Redis is not in the DB transaction, so the increment is guarded in
 * Redis too: one Lua script adds the event id to the set ranking:applied and increments only if it
 * was new. Either side then skips a redelivered event, whichever of the two commits came first.
 */
@Component
@Profile("ranking")
public class RankingListener {
    static final String GROUP = "ranking";
    private static final Logger log = LoggerFactory.getLogger(RankingListener.class);
    private static final DefaultRedisScript<Long> INCREMENT_ONCE = new DefaultRedisScript<>("""
            if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
              redis.call('ZINCRBY', KEYS[2], ARGV[2], ARGV[3])
              return 1
            end
            return 0
            """, Long.class);
    private final Store store;
    private final TransactionTemplate tx;
    private final StringRedisTemplate redis;

    public RankingListener(Store store, TransactionTemplate tx, StringRedisTemplate redis) {
        this.store = store;
        this.tx = tx;
        this.redis = redis;
    }

    @RetryableTopic(attempts = "${commerce.retry.attempts:3}",
            backOff = @BackOff(delayString = "${commerce.retry.delay-ms:200}", multiplier = 2.0),
            topicSuffixingStrategy = TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE,
            retryTopicSuffix = "-ranking-retry", dltTopicSuffix = "-ranking-dlt",
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
            redis.execute(INCREMENT_ONCE, List.of("ranking:applied", "ranking:sales"), e.eventId(),
                    Integer.toString(e.quantity()), e.productId());
            log.info("ranking: {} +{} (order {})", e.productId(), e.quantity(), e.orderId());
        });
    }

    @DltHandler
    public void dead(ConsumerRecord<?, ?> record) {
        DeadLetters.log(GROUP, record);
    }
}
