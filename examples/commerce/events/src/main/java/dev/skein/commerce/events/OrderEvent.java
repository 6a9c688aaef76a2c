package dev.skein.commerce.events;

import java.time.Instant;
import java.util.UUID;

/**
 * An event of an order's life on the {@code orders} topic, keyed by {@code orderId}: one JSON shape
 * for the three types, told apart by {@code type} (and the eventType header).
 *
 * @param type       {@link EventTypes#ORDER_CREATED}, {@link EventTypes#PAYMENT_COMPLETED} or {@link EventTypes#ORDER_SHIPPED}
 * @param eventId    a UUID, unique per event: consumers use it for idempotence
 * @param amount     in cents
 * @param occurredAt ISO-8601 instant
 */
public record OrderEvent(String type, String eventId, String orderId, String userId, String productId,
                         int quantity, long amount, String occurredAt) {

    public static OrderEvent of(String type, String orderId, String userId, String productId, int quantity, long amount) {
        return new OrderEvent(type, UUID.randomUUID().toString(), orderId, userId, productId, quantity, amount,
                Instant.now().toString());
    }

    public static OrderEvent orderCreated(String orderId, String userId, String productId, int quantity, long amount) {
        return of(EventTypes.ORDER_CREATED, orderId, userId, productId, quantity, amount);
    }

    public static OrderEvent paymentCompleted(String orderId, String userId, String productId, int quantity, long amount) {
        return of(EventTypes.PAYMENT_COMPLETED, orderId, userId, productId, quantity, amount);
    }

    public static OrderEvent orderShipped(String orderId, String userId, String productId, int quantity, long amount) {
        return of(EventTypes.ORDER_SHIPPED, orderId, userId, productId, quantity, amount);
    }
}
