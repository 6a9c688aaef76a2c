package dev.skein.commerce.app;

import dev.skein.commerce.events.CouponAdmitted;
import dev.skein.commerce.events.EventHeaders;
import dev.skein.commerce.events.EventTypes;
import dev.skein.commerce.events.OrderEvent;
import dev.skein.commerce.events.StockRequest;
import dev.skein.commerce.events.Topics;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;
import org.springframework.context.annotation.Profile;
import org.springframework.data.redis.core.StringRedisTemplate;
import org.springframework.data.redis.core.script.DefaultRedisScript;
import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PostMapping;
import org.springframework.web.bind.annotation.RequestBody;
import org.springframework.web.bind.annotation.RequestHeader;
import org.springframework.web.bind.annotation.RestController;

/** The HTTP API (profile api): products, orders, payments, shipping and coupon admission. */
@RestController
@Profile("api")
public class ApiController {
    private static final Logger log = LoggerFactory.getLogger(ApiController.class);

    /**
     * Coupon admission, atomic in Redis: a user already in the set gets -1, a full campaign -2, an
     * unknown campaign -3; otherwise the user joins the set and gets 1. KEYS: users set, limit.
     */
    private static final DefaultRedisScript<Long> ADMIT = new DefaultRedisScript<>("""
            if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
            local limit = tonumber(redis.call('GET', KEYS[2]))
            if limit == nil then return -3 end
            if redis.call('SCARD', KEYS[1]) >= limit then return -2 end
            redis.call('SADD', KEYS[1], ARGV[1])
            return 1
            """, Long.class);

    private final JdbcTemplate jdbc;
    private final StringRedisTemplate redis;
    private final Publisher publisher;

    public ApiController(JdbcTemplate jdbc, StringRedisTemplate redis, Publisher publisher) {
        this.jdbc = jdbc;
        this.redis = redis;
        this.publisher = publisher;
    }

    public record ProductRequest(String productId, int stock) {
    }

    public record OrderRequest(String userId, String productId, int quantity, long amount) {
    }

    public record CampaignRequest(String campaignId, long limit, String expiresAt) {
    }

    public record CouponRequest(String userId) {
    }

    @GetMapping("/health")
    public Map<String, String> health() {
        return Map.of("status", "UP");
    }

    @PostMapping("/products")
    public Map<String, Object> product(@RequestBody ProductRequest req) {
        jdbc.update("INSERT INTO stock (product_id, available) VALUES (?, ?)"
                + " ON CONFLICT (product_id) DO UPDATE SET available = EXCLUDED.available", req.productId(), req.stock());
        return Map.of("productId", req.productId(), "stock", req.stock());
    }

    @PostMapping("/orders")
    public ResponseEntity<Map<String, Object>> createOrder(@RequestBody OrderRequest req,
            @RequestHeader(name = EventHeaders.HTTP_TRACE_ID, required = false) String traceHeader) {
        String trace = trace(traceHeader);
        try {
            if (req.userId() == null || req.productId() == null || req.quantity() <= 0) {
                return ResponseEntity.badRequest().body(Map.of("reason", "userId, productId and a positive quantity are required"));
            }
            String orderId = UUID.randomUUID().toString();
            jdbc.update("INSERT INTO orders (order_id, user_id, product_id, quantity, amount, status) VALUES (?, ?, ?, ?, ?, 'CREATED')",
                    orderId, req.userId(), req.productId(), req.quantity(), req.amount());
            OrderEvent created = OrderEvent.orderCreated(orderId, req.userId(), req.productId(), req.quantity(), req.amount());
            publisher.publish(Topics.ORDERS, orderId, EventTypes.ORDER_CREATED, trace, created);
            publisher.publish(Topics.STOCK_REQUESTS, req.productId(), EventTypes.STOCK_REQUESTED, trace,
                    StockRequest.of(orderId, req.userId(), req.productId(), req.quantity()));
            log.info("order {} created for user {} product {} x{}", orderId, req.userId(), req.productId(), req.quantity());
            return ResponseEntity.status(HttpStatus.CREATED).body(Map.of("orderId", orderId, "status", "CREATED"));
        } finally {
            MDC.clear();
        }
    }

    @GetMapping("/orders/{id}")
    public ResponseEntity<Map<String, Object>> getOrder(@PathVariable("id") String id) {
        List<Map<String, Object>> rows = jdbc.queryForList(
                "SELECT order_id, user_id, product_id, quantity, amount, status FROM orders WHERE order_id = ?", id);
        if (rows.isEmpty()) {
            return ResponseEntity.status(HttpStatus.NOT_FOUND).body(Map.of("reason", "NO_SUCH_ORDER"));
        }
        Map<String, Object> r = rows.get(0);
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("orderId", r.get("order_id"));
        body.put("status", r.get("status"));
        body.put("userId", r.get("user_id"));
        body.put("productId", r.get("product_id"));
        body.put("quantity", r.get("quantity"));
        body.put("amount", r.get("amount"));
        return ResponseEntity.ok(body);
    }

    @PostMapping("/orders/{id}/pay")
    public ResponseEntity<Map<String, Object>> pay(@PathVariable("id") String id,
            @RequestHeader(name = EventHeaders.HTTP_TRACE_ID, required = false) String traceHeader) {
        return transition(id, "RESERVED", "PAID", EventTypes.PAYMENT_COMPLETED, traceHeader);
    }

    @PostMapping("/orders/{id}/ship")
    public ResponseEntity<Map<String, Object>> ship(@PathVariable("id") String id,
            @RequestHeader(name = EventHeaders.HTTP_TRACE_ID, required = false) String traceHeader) {
        return transition(id, "PAID", "SHIPPED", EventTypes.ORDER_SHIPPED, traceHeader);
    }

    /** Moves an order from one status to the next with a conditional UPDATE, then publishes the event. */
    private ResponseEntity<Map<String, Object>> transition(String id, String from, String to, String eventType, String traceHeader) {
        String trace = trace(traceHeader);
        try {
            List<Map<String, Object>> rows = jdbc.queryForList(
                    "UPDATE orders SET status = ? WHERE order_id = ? AND status = ? RETURNING user_id, product_id, quantity, amount",
                    to, id, from);
            if (rows.isEmpty()) {
                List<String> status = jdbc.queryForList("SELECT status FROM orders WHERE order_id = ?", String.class, id);
                if (status.isEmpty()) {
                    return ResponseEntity.status(HttpStatus.NOT_FOUND).body(Map.of("reason", "NO_SUCH_ORDER"));
                }
                return ResponseEntity.status(HttpStatus.CONFLICT)
                        .body(Map.of("orderId", id, "status", status.get(0), "reason", "order is " + status.get(0) + ", not " + from));
            }
            Map<String, Object> r = rows.get(0);
            OrderEvent event = OrderEvent.of(eventType, id, (String) r.get("user_id"), (String) r.get("product_id"),
                    ((Number) r.get("quantity")).intValue(), ((Number) r.get("amount")).longValue());
            publisher.publish(Topics.ORDERS, id, eventType, trace, event);
            log.info("order {} {}", id, to);
            return ResponseEntity.ok(Map.of("orderId", id, "status", to));
        } finally {
            MDC.clear();
        }
    }

    @PostMapping("/campaigns")
    public ResponseEntity<Map<String, Object>> campaign(@RequestBody CampaignRequest req) {
        if (req.campaignId() == null || req.limit() < 0) {
            return ResponseEntity.badRequest().body(Map.of("reason", "campaignId and a limit >= 0 are required"));
        }
        redis.opsForValue().set(limitKey(req.campaignId()), Long.toString(req.limit()));
        if (req.expiresAt() != null) {
            Instant.parse(req.expiresAt()); // refuse a malformed date now rather than in the worker
            redis.opsForValue().set(expiresKey(req.campaignId()), req.expiresAt());
        } else {
            redis.delete(expiresKey(req.campaignId()));
        }
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("campaignId", req.campaignId());
        body.put("limit", req.limit());
        body.put("expiresAt", req.expiresAt());
        return ResponseEntity.ok(body);
    }

    @PostMapping("/campaigns/{c}/coupons")
    public ResponseEntity<Map<String, Object>> admit(@PathVariable("c") String campaign, @RequestBody CouponRequest req,
            @RequestHeader(name = EventHeaders.HTTP_TRACE_ID, required = false) String traceHeader) {
        String trace = trace(traceHeader);
        try {
            if (req.userId() == null || req.userId().isEmpty()) {
                return ResponseEntity.badRequest().body(Map.of("reason", "userId is required"));
            }
            Long verdict = redis.execute(ADMIT, List.of(usersKey(campaign), limitKey(campaign)), req.userId());
            if (verdict == null || verdict == -3) {
                return ResponseEntity.status(HttpStatus.NOT_FOUND).body(Map.of("reason", "NO_SUCH_CAMPAIGN"));
            }
            if (verdict == -1) {
                return ResponseEntity.status(HttpStatus.CONFLICT).body(Map.of("reason", "ALREADY_ADMITTED"));
            }
            if (verdict == -2) {
                return ResponseEntity.status(HttpStatus.GONE).body(Map.of("reason", "SOLD_OUT"));
            }
            String expiresAt = redis.opsForValue().get(expiresKey(campaign));
            try {
                publisher.publish(Topics.COUPON_ADMISSIONS, req.userId(), EventTypes.COUPON_ADMITTED, trace,
                        CouponAdmitted.of(campaign, req.userId(), expiresAt));
            } catch (RuntimeException e) {
                // Not published: give the place back so that the campaign can still issue N coupons.
                redis.opsForSet().remove(usersKey(campaign), req.userId());
                log.error("admission of {} to {} not published, place given back: {}", req.userId(), campaign, e.toString());
                return ResponseEntity.status(HttpStatus.SERVICE_UNAVAILABLE).body(Map.of("reason", "NOT_PUBLISHED"));
            }
            log.info("user {} admitted to campaign {}", req.userId(), campaign);
            return ResponseEntity.status(HttpStatus.ACCEPTED)
                    .body(Map.of("campaignId", campaign, "userId", req.userId(), "status", "ADMITTED"));
        } finally {
            MDC.clear();
        }
    }

    static String usersKey(String campaign) {
        return "coupon:" + campaign + ":users";
    }

    static String limitKey(String campaign) {
        return "coupon:" + campaign + ":limit";
    }

    static String expiresKey(String campaign) {
        return "coupon:" + campaign + ":expiresAt";
    }

    private static String trace(String header) {
        String trace = header == null || header.isBlank() ? UUID.randomUUID().toString() : header;
        MDC.put(EventHeaders.TRACE_ID, trace);
        return trace;
    }
}
