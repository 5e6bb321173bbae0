// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Multicall3
/// @notice Batches calls into one, with the ABI of the widely deployed Multicall3
/// (canonical address 0xcA11bde05977b3631167028862bE2a173976CA11), which tools and the x402 SDK facilitator expect.
/// @dev No constructor and no storage: the runtime code can be copied to the canonical address as is.
/// Failures that are not allowed revert with "Multicall3: call failed"; a msg.value that differs from the sum of the
/// call values in `aggregate3Value` reverts with "Multicall3: value mismatch". The aggregate functions are payable,
/// like the original.
contract Multicall3 {
    struct Call {
        address target;
        bytes callData;
    }

    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Call3Value {
        address target;
        bool allowFailure;
        uint256 value;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Call every target in order; revert if any call fails.
    /// @param calls The calls to make
    /// @return blockNumber The current block number
    /// @return returnData The raw return data of each call
    function aggregate(Call[] calldata calls) public payable returns (uint256 blockNumber, bytes[] memory returnData) {
        blockNumber = block.number;
        returnData = new bytes[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            bool success;
            (success, returnData[i]) = calls[i].target.call(calls[i].callData);
            require(success, "Multicall3: call failed");
        }
    }

    /// @notice Call every target in order, recording failures instead of reverting unless `requireSuccess`.
    /// @param requireSuccess Revert on the first failed call when true
    /// @param calls The calls to make
    /// @return returnData Success flag and raw return (or revert) data of each call
    function tryAggregate(bool requireSuccess, Call[] calldata calls)
        public
        payable
        returns (Result[] memory returnData)
    {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            returnData[i] = _call(calls[i].target, 0, calls[i].callData, !requireSuccess);
        }
    }

    /// @notice `tryAggregate` plus the current block number and hash.
    /// @param requireSuccess Revert on the first failed call when true
    /// @param calls The calls to make
    /// @return blockNumber The current block number
    /// @return blockHash blockhash(block.number), which the EVM reports as zero for the current block
    /// @return returnData Success flag and raw return (or revert) data of each call
    function tryBlockAndAggregate(bool requireSuccess, Call[] calldata calls)
        public
        payable
        returns (uint256 blockNumber, bytes32 blockHash, Result[] memory returnData)
    {
        blockNumber = block.number;
        blockHash = blockhash(block.number);
        returnData = tryAggregate(requireSuccess, calls);
    }

    /// @notice `tryBlockAndAggregate` with every call required to succeed.
    /// @param calls The calls to make
    /// @return blockNumber The current block number
    /// @return blockHash blockhash(block.number), which the EVM reports as zero for the current block
    /// @return returnData Success flag and raw return data of each call
    function blockAndAggregate(Call[] calldata calls)
        public
        payable
        returns (uint256 blockNumber, bytes32 blockHash, Result[] memory returnData)
    {
        return tryBlockAndAggregate(true, calls);
    }

    /// @notice Call every target in order; a failed call reverts the batch unless its `allowFailure` is set.
    /// @param calls The calls to make
    /// @return returnData Success flag and raw return (or revert) data of each call
    function aggregate3(Call3[] calldata calls) public payable returns (Result[] memory returnData) {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            returnData[i] = _call(calls[i].target, 0, calls[i].callData, calls[i].allowFailure);
        }
    }

    /// @notice `aggregate3` with ETH attached to each call; msg.value must equal the sum of the call values.
    /// @param calls The calls to make
    /// @return returnData Success flag and raw return (or revert) data of each call
    function aggregate3Value(Call3Value[] calldata calls) public payable returns (Result[] memory returnData) {
        uint256 total;
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            total += calls[i].value;
            returnData[i] = _call(calls[i].target, calls[i].value, calls[i].callData, calls[i].allowFailure);
        }
        require(msg.value == total, "Multicall3: value mismatch");
    }

    /// @notice The hash of block `blockNumber` (zero outside the last 256 blocks).
    /// @param blockNumber The block number
    /// @return blockHash Its hash
    function getBlockHash(uint256 blockNumber) public view returns (bytes32 blockHash) {
        blockHash = blockhash(blockNumber);
    }

    /// @notice The current block number.
    /// @return blockNumber block.number
    function getBlockNumber() public view returns (uint256 blockNumber) {
        blockNumber = block.number;
    }

    /// @notice The current block's coinbase.
    /// @return coinbase block.coinbase
    function getCurrentBlockCoinbase() public view returns (address coinbase) {
        coinbase = block.coinbase;
    }

    /// @notice The current block's difficulty; since the merge, its PREVRANDAO value.
    /// @return difficulty block.prevrandao
    function getCurrentBlockDifficulty() public view returns (uint256 difficulty) {
        difficulty = block.prevrandao;
    }

    /// @notice The current block's gas limit.
    /// @return gaslimit block.gaslimit
    function getCurrentBlockGasLimit() public view returns (uint256 gaslimit) {
        gaslimit = block.gaslimit;
    }

    /// @notice The current block's timestamp.
    /// @return timestamp block.timestamp
    function getCurrentBlockTimestamp() public view returns (uint256 timestamp) {
        timestamp = block.timestamp;
    }

    /// @notice The ETH balance of `addr`.
    /// @param addr The account
    /// @return balance Its balance in wei
    function getEthBalance(address addr) public view returns (uint256 balance) {
        balance = addr.balance;
    }

    /// @notice The hash of the previous block (zero at block 0, where the subtraction wraps instead of reverting).
    /// @return blockHash blockhash(block.number - 1)
    function getLastBlockHash() public view returns (bytes32 blockHash) {
        unchecked {
            blockHash = blockhash(block.number - 1);
        }
    }

    /// @notice The current block's base fee.
    /// @return basefee block.basefee
    function getBasefee() public view returns (uint256 basefee) {
        basefee = block.basefee;
    }

    /// @notice The chain id.
    /// @return chainid block.chainid
    function getChainId() public view returns (uint256 chainid) {
        chainid = block.chainid;
    }

    function _call(address target, uint256 value, bytes calldata callData, bool allowFailure)
        private
        returns (Result memory result)
    {
        (result.success, result.returnData) = target.call{value: value}(callData);
        require(result.success || allowFailure, "Multicall3: call failed");
    }
}
