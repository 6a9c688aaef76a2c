package dev.skein.commerce.app;

import dev.skein.commerce.events.CouponAdmitted;
import dev.skein.commerce.events.Topics;
import java.time.Instant;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.Profile;
import org.springframework.dao.DuplicateKeyException;
import org.springframework.kafka.annotation.BackOff;
import org.springframework.kafka.annotation.DltHandler;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.annotation.RetryableTopic;
import org.springframework.kafka.retrytopic.DltStrategy;
import org.springframework.kafka.retrytopic.TopicSuffixingStrategy;
import org.springframework.kafka.support.Acknowledgment;
import org.springframework.stereotype.Component;
import org.springframework.transaction.support.TransactionTemplate;

/**
 * The coupon worker (profile coupon-worker, group coupon-worker) on coupon-admissions. It writes the
 * coupon in a DB transaction and acknowledges the record only after the commit (ack-mode
 * manual_immediate). Killed between the commit and the acknowledgement, it is given the record
 * again on restart: the processed_event row or, failing that, the unique (campaign_id, user_id)
 * constraint refuses the second coupon, and the record is acknowledged. An expired campaign is a
 * business failure: no coupon, acknowledged, not retried.
 */
@Component
@Profile("coupon-worker")
public class CouponWorker {
    static final String GROUP = "coupon-worker";
    private static final Logger log = LoggerFactory.getLogger(CouponWorker.class);
    private final Store store;
    private final TransactionTemplate tx;

    public CouponWorker(Store store, TransactionTemplate tx) {
        this.store = store;
        this.tx = tx;
    }

    @RetryableTopic(attempts = "${commerce.retry.attempts:3}",
            backOff = @BackOff(delayString = "${commerce.retry.delay-ms:200}", multiplier = 2.0),
            topicSuffixingStrategy = TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE,
            retryTopicSuffix = "-coupon-worker-retry", dltTopicSuffix = "-coupon-worker-dlt",
            numPartitions = "6", replicationFactor = "1", dltStrategy = DltStrategy.FAIL_ON_ERROR)
    @KafkaListener(topics = Topics.COUPON_ADMISSIONS, groupId = GROUP)
    public void onAdmission(ConsumerRecord<String, CouponAdmitted> record, Acknowledgment ack) {
        CouponAdmitted a = record.value();
        String outcome;
        try {
            outcome = tx.execute(status -> {
                if (!store.firstTime(GROUP, a.eventId())) {
                    return "duplicate";
                }
                if (a.expiresAt() != null && Instant.parse(a.expiresAt()).isBefore(Instant.now())) {
                    return "expired";
                }
                store.jdbc().update("INSERT INTO coupon (campaign_id, user_id, issued_at) VALUES (?, ?, now())",
                        a.campaignId(), a.userId());
                return "issued";
            });
        } catch (DuplicateKeyException e) {
            outcome = "already-issued";
        }
        ack.acknowledge(); // after the commit (or the constraint's refusal), never before
        switch (outcome) {
            case "issued" -> log.info("coupon issued: campaign {} user {}", a.campaignId(), a.userId());
            case "expired" -> log.info("campaign {} expired at {}: no coupon for {} (business failure, not retried)",
                    a.campaignId(), a.expiresAt(), a.userId());
            case "already-issued" -> log.info("coupon for {} in {} already issued (unique constraint): acknowledged",
                    a.userId(), a.campaignId());
            default -> log.info("duplicate admission {} skipped", a.eventId());
        }
    }

    @DltHandler
    public void dead(ConsumerRecord<?, ?> record, Acknowledgment ack) {
        DeadLetters.log(GROUP, record);
        ack.acknowledge();
    }
}
