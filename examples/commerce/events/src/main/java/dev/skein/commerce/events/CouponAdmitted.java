package dev.skein.commerce.events;

import java.time.Instant;
import java.util.UUID;

/**
 * A user admitted to a coupon campaign by Redis, on {@code coupon-admissions} keyed by user id.
 *
 * @param expiresAt the campaign's expiry (ISO-8601) or null: the worker issues no coupon past it
 */
public record CouponAdmitted(String type, String eventId, String campaignId, String userId, String expiresAt,
                             String occurredAt) {

    public static CouponAdmitted of(String campaignId, String userId, String expiresAt) {
        return new CouponAdmitted(EventTypes.COUPON_ADMITTED, UUID.randomUUID().toString(), campaignId, userId,
                expiresAt, Instant.now().toString());
    }
}
