/* CRC-32C against published check values, streaming, and combine. */
#include "common/crc32c.h"
#include "test.h"

static void check_values(void)
{
    /* The standard check value of CRC-32C over "123456789". */
    ASSERT_UEQ(crc32c_update(0, "123456789", 9), 0xE3069283u);
    /* RFC 3720 B.4: 32 bytes of zeros, of 0xff. */
    unsigned char buf[32];
    memset(buf, 0, sizeof(buf));
    ASSERT_UEQ(crc32c_update(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof(buf));
    ASSERT_UEQ(crc32c_update(0, buf, 32), 0x62A8AB43u);
    ASSERT_UEQ(crc32c_update(0, "", 0), 0);
}

static void streaming_and_combine(void)
{
    unsigned char data[4099];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 131 + 7);
    uint32_t whole = crc32c_update(0, data, sizeof(data));
    for (size_t cut = 0; cut <= sizeof(data); cut += 97) {
        uint32_t a = crc32c_update(0, data, cut);
        ASSERT_UEQ(crc32c_update(a, data + cut, sizeof(data) - cut), whole);
        uint32_t b = crc32c_update(0, data + cut, sizeof(data) - cut);
        ASSERT_UEQ(crc32c_combine(a, b, sizeof(data) - cut), whole);
    }
    /* Unaligned starts take the byte-wise head path. */
    ASSERT_UEQ(crc32c_update(crc32c_update(0, data, 3), data + 3, 100),
               crc32c_update(0, data, 103));
}

int main(void)
{
    RUN(check_values);
    RUN(streaming_and_combine);
    return 0;
}
