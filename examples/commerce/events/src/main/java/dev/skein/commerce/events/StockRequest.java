package dev.skein.commerce.events;

import java.time.Instant;
import java.util.UUID;

/** A request to take {@code quantity} of {@code productId} for an order, on {@code stock-requests} keyed by product id. */
public record StockRequest(String type, String eventId, String orderId, String userId, String productId,
                           int quantity, String occurredAt) {

    public static StockRequest of(String orderId, String userId, String productId, int quantity) {
        return new StockRequest(EventTypes.STOCK_REQUESTED, UUID.randomUUID().toString(), orderId, userId, productId,
                quantity, Instant.now().toString());
    }
}
